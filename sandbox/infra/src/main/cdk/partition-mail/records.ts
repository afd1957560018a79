/** DNS record values of a partition's mail domain, and the cdk.context.json entry that feeds DKIM. */

export const SPF_VALUE = "v=spf1 include:spf.mtasv.net ~all";
export const DMARC_VALUE = "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@arda.cards";
export const DEFAULT_RETURN_PATH_TARGET = "pm.mtasv.net";
export const TXT_STRING_MAX = 255;

/** A problem in the instance's inputs (cdk.context.json): reported as one line, without a stack trace. */
export class InputError extends Error {}

/** What the deploy's pre-deploy step writes to cdk.context.json under `partitionMail:<I>:<P>`. */
export interface PartitionMailContext {
  readonly dkimSelector: string;
  readonly dkimPublicKey: string;
  readonly returnPathTarget: string;
}

export function contextKey(infrastructure: string, partition: string): string {
  return `partitionMail:${infrastructure}:${partition}`;
}

/** Split a TXT value into strings of at most `max` characters, in order (their concatenation is the value). */
export function splitTxt(value: string, max: number = TXT_STRING_MAX): string[] {
  const parts: string[] = [];
  for (let start = 0; start < value.length; start += max) {
    parts.push(value.slice(start, start + max));
  }
  return parts;
}

/** One Route53 TXT record value: each string quoted, separated by a space (`"k=rsa;p=MIIB…" "…IDAQAB"`). */
export function txtRecordValue(value: string): string {
  return splitTxt(value)
    .map((part) => `"${part}"`)
    .join(" ");
}

export function dkimValue(publicKey: string): string {
  return `k=rsa;p=${publicKey}`;
}

/**
 * Validate the context entry found under `key` (undefined when absent; returnPathTarget defaults to pm.mtasv.net).
 * Throws one line naming the key, the field and what was found.
 */
export function parseContextEntry(key: string, raw: unknown): PartitionMailContext | undefined {
  if (raw === undefined) {
    return undefined;
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new InputError(`cdk.context.json: ${key} must be an object {dkimSelector, dkimPublicKey, returnPathTarget}`);
  }
  const entry = raw as Record<string, unknown>;
  const field = (name: string, pattern: RegExp, hint: string, fallback?: string): string => {
    const value = entry[name] ?? fallback;
    if (typeof value !== "string" || !pattern.test(value)) {
      const seen = JSON.stringify(value) ?? "nothing";
      throw new InputError(`cdk.context.json: ${key}.${name} must be ${hint}; got ${seen.slice(0, 60)}`);
    }
    return value;
  };
  return {
    // RFC 6376 §3.1: a selector is one or more dot-separated labels; Postmark's older selectors hold a dot
    dkimSelector: field(
      "dkimSelector",
      /^(?=.{1,200}$)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*$/,
      "a DKIM selector like 20260526234343pm or 20150316104110.pm",
    ),
    dkimPublicKey: field("dkimPublicKey", /^[A-Za-z0-9+/]+={0,2}$/, "the base64 RSA public key without spaces"),
    returnPathTarget: field(
      "returnPathTarget",
      /^[A-Za-z0-9.-]{1,253}$/,
      "a host name like pm.mtasv.net",
      DEFAULT_RETURN_PATH_TARGET,
    ),
  };
}
