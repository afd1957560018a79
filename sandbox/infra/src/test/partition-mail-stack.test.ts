import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { App } from "aws-cdk-lib/core";
import { Template } from "aws-cdk-lib/assertions";
import { addPartitionMailStack } from "../main/cdk/partition-mail/app";
import { PartitionMailInstance } from "../main/cdk/partition-mail/partition-mail-stack";
import { contextKey, parseContextEntry, splitTxt, txtRecordValue } from "../main/cdk/partition-mail/records";

const PROD: PartitionMailInstance = {
  infrastructure: "Alpha001",
  partition: "prod",
  account: "009765408297",
  region: "us-east-1",
  parentDomain: "ardamails.com",
};
// A 2048-bit RSA public key is 392 base64 characters: "k=rsa;p=" + key needs two TXT strings.
const KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "x".repeat(342) + "IDAQAB";
const ENTRY = { dkimSelector: "20260526234343pm", dkimPublicKey: KEY, returnPathTarget: "pm.mtasv.net" };

function synth(context: Record<string, unknown> = {}): Template {
  const app = new App({ analyticsReporting: false, context });
  return Template.fromStack(addPartitionMailStack(app, PROD));
}

function recordsOfType(template: Template, type: string): Array<Record<string, unknown>> {
  return Object.values(template.findResources("AWS::Route53::RecordSet"))
    .map((resource) => resource["Properties"] as Record<string, unknown>)
    .filter((properties) => properties["Type"] === type);
}

describe("PartitionMailStack", () => {
  test("no IAM role has a RoleName (partitions of one account must not collide)", () => {
    const roles = synth({ [contextKey("Alpha001", "prod")]: ENTRY }).findResources("AWS::IAM::Role");
    assert.equal(Object.keys(roles).length, 2);
    for (const [logicalId, role] of Object.entries(roles)) {
      assert.equal(role["Properties"]["RoleName"], undefined, `${logicalId} sets RoleName`);
    }
  });

  test("exports the six <I>-<P>-API-<Name> outputs", () => {
    const outputs = synth().toJSON()["Outputs"] as Record<string, { Value: unknown; Export: { Name: string } }>;
    const exported = Object.values(outputs)
      .map((output) => output.Export.Name)
      .sort();
    assert.deepEqual(exported, [
      "Alpha001-prod-API-EmailDnsProvisioningRoleArn",
      "Alpha001-prod-API-EmailEncryptionKeyArn",
      "Alpha001-prod-API-EmailEncryptionKeyFallbackRoleArn",
      "Alpha001-prod-API-EmailPostmarkAccountTokenArn",
      "Alpha001-prod-API-PartitionMailZoneId",
      "Alpha001-prod-API-PartitionMailZoneName",
    ]);
    assert.equal(outputs["PartitionMailZoneName"]?.Value, "prod.ardamails.com");
  });

  test("DKIM TXT value is split into quoted strings of at most 255 characters", () => {
    const [dkim] = recordsOfType(synth({ [contextKey("Alpha001", "prod")]: ENTRY }), "TXT").filter((r) =>
      String(r["Name"]).includes("._domainkey."),
    );
    assert.ok(dkim, "no DKIM record");
    assert.equal(dkim["Name"], "20260526234343pm._domainkey.prod.ardamails.com.");
    const values = dkim["ResourceRecords"] as string[];
    assert.equal(values.length, 1, "one record value holding several strings");
    const strings = [...(values[0] ?? "").matchAll(/"([^"]*)"/g)].map((match) => match[1] ?? "");
    assert.ok(strings.length >= 2, `expected several strings, got ${strings.length}`);
    assert.ok(strings.every((s) => s.length <= 255));
    assert.equal(strings.join(""), `k=rsa;p=${KEY}`);
  });

  test("without a context entry: no DKIM record, a warning, and the default Return-Path target", () => {
    const app = new App({ analyticsReporting: false });
    const stack = addPartitionMailStack(app, PROD);
    const template = Template.fromStack(stack);
    const txt = recordsOfType(template, "TXT").map((r) => r["Name"]);
    assert.deepEqual(txt.sort(), ["_dmarc.prod.ardamails.com.", "prod.ardamails.com."]);
    const warnings = app
      .synth()
      .getStackByName(stack.stackName)
      .messages.filter((m) => m.level === "warning");
    assert.match(String(warnings[0]?.entry.data), /no partitionMail:Alpha001:prod entry/);
    assert.deepEqual(recordsOfType(template, "CNAME")[0]?.["ResourceRecords"], ["pm.mtasv.net"]);
  });

  test("SPF, DMARC and zone values", () => {
    const template = synth();
    template.hasResourceProperties("AWS::Route53::HostedZone", { Name: "prod.ardamails.com." });
    template.hasResourceProperties("AWS::Route53::RecordSet", {
      Name: "prod.ardamails.com.",
      ResourceRecords: ['"v=spf1 include:spf.mtasv.net ~all"'],
    });
    template.hasResourceProperties("AWS::Route53::RecordSet", {
      Name: "_dmarc.prod.ardamails.com.",
      ResourceRecords: ['"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@arda.cards"'],
    });
    template.resourceCountIs("AWS::SecretsManager::Secret", 2);
    assert.equal(template.toJSON()["Parameters"], undefined, "no bootstrap-version parameter");
  });
});

describe("records", () => {
  test("splitTxt keeps order and bounds", () => {
    assert.deepEqual(splitTxt("abcdefg", 3), ["abc", "def", "g"]);
    assert.deepEqual(splitTxt("", 3), []);
    assert.equal(txtRecordValue("a".repeat(256)), `"${"a".repeat(255)}" "a"`);
  });

  test("a malformed context entry fails naming the key and field", () => {
    assert.throws(
      () => parseContextEntry("partitionMail:Alpha001:prod", { dkimSelector: "s1", dkimPublicKey: "has space" }),
      /partitionMail:Alpha001:prod\.dkimPublicKey must be the base64 RSA public key/,
    );
    assert.throws(() => parseContextEntry("k", "text"), /k must be an object/);
    assert.equal(parseContextEntry("k", { ...ENTRY, returnPathTarget: undefined })?.returnPathTarget, "pm.mtasv.net");
  });

  test("dotted selectors are selectors; labels that are no DNS labels are not", () => {
    assert.equal(
      parseContextEntry("k", { ...ENTRY, dkimSelector: "20150316104110.pm" })?.dkimSelector,
      "20150316104110.pm",
    );
    for (const bad of ["a..b", ".pm", "pm.", "-pm", "p m"]) {
      assert.throws(
        () => parseContextEntry("k", { ...ENTRY, dkimSelector: bad }),
        /k\.dkimSelector must be a DKIM selector/,
      );
    }
  });
});
