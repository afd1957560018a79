import { App, DefaultStackSynthesizer } from "aws-cdk-lib/core";
import { PartitionMailInstance, PartitionMailStack } from "./partition-mail-stack";
import { InputError } from "./records";

/**
 * Build the one stack `<infrastructure>-<partition>-Email` of an instance into `app`.
 * No bootstrap-version parameter or rule, so the template also deploys where no CDK bootstrap stack exists.
 */
export function addPartitionMailStack(app: App, instance: PartitionMailInstance): PartitionMailStack {
  return new PartitionMailStack(app, `${instance.infrastructure}-${instance.partition}-Email`, {
    instance,
    env: { account: instance.account, region: instance.region },
    synthesizer: new DefaultStackSynthesizer({ generateBootstrapVersionRule: false }),
  });
}

/**
 * The whole CDK app of an instance file: context and output directory come from the CDK CLI (`cdk synth`).
 *
 * An instance file `src/main/cdk/instances/<Infrastructure>/<partition>.ts` is exactly (account of the
 * infrastructure: Alpha001 009765408297, Alpha002 139852620346):
 *
 *     import { synthPartitionMail } from "../../partition-mail/app";
 *
 *     synthPartitionMail({
 *       infrastructure: "Alpha001",
 *       partition: "prod",
 *       account: "009765408297",
 *       region: "us-east-1",
 *       parentDomain: "ardamails.com",
 *     });
 */
export function synthPartitionMail(instance: PartitionMailInstance): void {
  const app = new App({
    analyticsReporting: false,
    stackTraces: false,
    context: { "aws:cdk:disable-creation-stack-traces": true },
  });
  try {
    addPartitionMailStack(app, instance);
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    process.stderr.write(`error: ${error.message}\n`);
    process.exit(1);
  }
  app.synth();
}
