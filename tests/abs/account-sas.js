// Print an account SAS token for Azurite's well-known account (blob
// service; service, container and object resources; read, write, delete,
// list, add, create), signed with the account key, valid until 2099.
//   node account-sas.js
const crypto = require("crypto");

const account = "devstoreaccount1";
const key = Buffer.from(
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
  "base64",
);
const fields = {
  sp: "rwdlac",
  ss: "b",
  srt: "sco",
  st: "",
  se: "2099-01-01T00:00:00Z",
  sip: "",
  spr: "https,http",
  sv: "2021-08-06",
  ses: "",
};
// Account SAS, versions 2020-12-06 and later (with the encryption scope).
const toSign =
  [account, fields.sp, fields.ss, fields.srt, fields.st, fields.se, fields.sip, fields.spr, fields.sv, fields.ses].join(
    "\n",
  ) + "\n";
const sig = crypto.createHmac("sha256", key).update(toSign, "utf8").digest("base64");
const query = ["sv", "ss", "srt", "sp", "se", "spr"].map((k) => `${k}=${encodeURIComponent(fields[k])}`);
query.push(`sig=${encodeURIComponent(sig)}`);
console.log(query.join("&"));
