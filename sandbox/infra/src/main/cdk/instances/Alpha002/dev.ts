import { synthPartitionMail } from "../../partition-mail/app";

synthPartitionMail({
  infrastructure: "Alpha002",
  partition: "dev",
  account: "139852620346",
  region: "us-east-1",
  parentDomain: "ardamails.com",
});
