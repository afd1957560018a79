import { synthPartitionMail } from "../../partition-mail/app";

synthPartitionMail({
  infrastructure: "Alpha001",
  partition: "prod",
  account: "009765408297",
  region: "us-east-1",
  parentDomain: "ardamails.com",
});
