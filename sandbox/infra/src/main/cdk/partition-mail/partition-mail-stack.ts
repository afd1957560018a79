import { Annotations, CfnOutput, Stack, StackProps } from "aws-cdk-lib/core";
import * as iam from "aws-cdk-lib/aws-iam";
import * as route53 from "aws-cdk-lib/aws-route53";
import * as secretsmanager from "aws-cdk-lib/aws-secretsmanager";
import { Construct } from "constructs";
import {
  DEFAULT_RETURN_PATH_TARGET,
  DMARC_VALUE,
  SPF_VALUE,
  contextKey,
  dkimValue,
  parseContextEntry,
  txtRecordValue,
} from "./records";

/** Who and where: the values an instance file gives. */
export interface PartitionMailInstance {
  readonly infrastructure: string;
  readonly partition: string;
  readonly account: string;
  readonly region: string;
  readonly parentDomain: string;
}

export interface PartitionMailStackProps extends StackProps {
  readonly instance: PartitionMailInstance;
}

/**
 * A partition's mail domain `<partition>.<parentDomain>`: hosted zone, SPF, DMARC, DKIM (from cdk.context.json),
 * Return-Path CNAME, the Postmark token and encryption-key secrets, two roles, and six exports.
 * No custom resources: NS delegation in the parent zone is the deploy's job.
 */
export class PartitionMailStack extends Stack {
  readonly zone: route53.PublicHostedZone;

  constructor(scope: Construct, id: string, props: PartitionMailStackProps) {
    super(scope, id, props);
    const { infrastructure, partition, parentDomain } = props.instance;
    const zoneName = `${partition}.${parentDomain}`;
    const key = contextKey(infrastructure, partition);
    const mail = parseContextEntry(key, this.node.tryGetContext(key));

    this.zone = new route53.PublicHostedZone(this, "Zone", {
      zoneName,
      comment: `Partition mail for ${infrastructure}/${partition}`,
    });
    new route53.TxtRecord(this, "Spf", { zone: this.zone, values: [SPF_VALUE] });
    new route53.TxtRecord(this, "Dmarc", { zone: this.zone, recordName: `_dmarc.${zoneName}`, values: [DMARC_VALUE] });
    if (mail) {
      new route53.RecordSet(this, "Dkim", {
        zone: this.zone,
        recordType: route53.RecordType.TXT,
        recordName: `${mail.dkimSelector}._domainkey.${zoneName}`,
        target: route53.RecordTarget.fromValues(txtRecordValue(dkimValue(mail.dkimPublicKey))),
      });
    } else {
      Annotations.of(this).addWarningV2(
        "@mailgate/partition-mail:no-dkim",
        `cdk.context.json has no ${key} entry: synthesized without the DKIM record; the deploy's pre-deploy step writes it`,
      );
    }
    new route53.CnameRecord(this, "ReturnPath", {
      zone: this.zone,
      recordName: `pm-bounces.${zoneName}`,
      domainName: mail?.returnPathTarget ?? DEFAULT_RETURN_PATH_TARGET,
    });

    const token = new secretsmanager.Secret(this, "PostmarkAccountToken", {
      description: `Postmark account token for ${zoneName}`,
    });
    const encryptionKey = new secretsmanager.Secret(this, "EncryptionKey", {
      description: `Encryption key for ${zoneName} mail`,
      generateSecretString: { passwordLength: 64, excludePunctuation: true },
    });
    const account = new iam.AccountRootPrincipal();
    const dnsRole = new iam.Role(this, "DnsProvisioningRole", {
      assumedBy: account,
      description: `Creates DNS records in ${zoneName}`,
      inlinePolicies: {
        dns: new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({
              actions: ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets", "route53:GetHostedZone"],
              resources: [this.zone.hostedZoneArn],
            }),
            new iam.PolicyStatement({ actions: ["route53:GetChange"], resources: ["arn:aws:route53:::change/*"] }),
          ],
        }),
      },
    });
    const fallbackRole = new iam.Role(this, "EncryptionKeyFallbackRole", {
      assumedBy: account,
      description: `Reads the ${zoneName} mail encryption key when the primary path is unavailable`,
      inlinePolicies: {
        encryptionKey: new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({
              actions: ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
              resources: [encryptionKey.secretArn],
            }),
          ],
        }),
      },
    });

    const exports: Record<string, string> = {
      PartitionMailZoneId: this.zone.hostedZoneId,
      PartitionMailZoneName: zoneName,
      EmailPostmarkAccountTokenArn: token.secretArn,
      EmailEncryptionKeyArn: encryptionKey.secretArn,
      EmailDnsProvisioningRoleArn: dnsRole.roleArn,
      EmailEncryptionKeyFallbackRoleArn: fallbackRole.roleArn,
    };
    for (const [name, value] of Object.entries(exports)) {
      new CfnOutput(this, name, { value, exportName: `${infrastructure}-${partition}-API-${name}` });
    }
  }
}
