// Create a container in Azurite, signed with the emulator's well-known
// account key (Shared Key). Node's own crypto and http only, so nothing
// beyond Azurite itself is installed.
//   node create-container.js PORT CONTAINER
const crypto = require("crypto");
const http = require("http");

const account = "devstoreaccount1";
const key = Buffer.from(
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
  "base64",
);
const [port, container] = process.argv.slice(2);
const date = new Date().toUTCString();
const version = "2021-08-06";
const path = `/${account}/${container}`;
// VERB, eleven standard headers (all empty), x-ms-* headers, resource.
const toSign =
  "PUT\n" + "\n".repeat(11) + `x-ms-date:${date}\nx-ms-version:${version}\n/${account}${path}\nrestype:container`;
const signature = crypto.createHmac("sha256", key).update(toSign, "utf8").digest("base64");
const request = http.request(
  {
    host: "127.0.0.1",
    port,
    method: "PUT",
    path: `${path}?restype=container`,
    headers: {
      "x-ms-date": date,
      "x-ms-version": version,
      "content-length": "0",
      authorization: `SharedKey ${account}:${signature}`,
    },
  },
  (response) => {
    let body = "";
    response.on("data", (chunk) => (body += chunk));
    response.on("end", () => {
      // 201 created, 409 already there: both leave the container in place.
      if (response.statusCode !== 201 && response.statusCode !== 409) {
        console.error(`create container ${container}: HTTP ${response.statusCode} ${body}`);
        process.exit(1);
      }
    });
  },
);
request.on("error", (e) => {
  console.error(`create container ${container}: ${e}`);
  process.exit(1);
});
request.end();
