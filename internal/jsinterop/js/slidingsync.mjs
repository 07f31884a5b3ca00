// Drives matrix-js-sdk's sliding sync (MSC4186) against the homeserver:
// the client lists Alice's rooms, then gets a message Bob sends while it
// syncs. The test passes its parameters in the environment and reads the
// last line: "OK" or "FAIL ...".
import * as sdk from "matrix-js-sdk";
import { SlidingSync } from "matrix-js-sdk/lib/sliding-sync.js";

const env = (k) => {
  if (!process.env[k]) throw new Error("missing " + k);
  return process.env[k];
};
const base = env("HS_URL");
const alice = { userId: env("ALICE_ID"), token: env("ALICE_TOKEN"), deviceId: env("ALICE_DEVICE") };
const bobToken = env("BOB_TOKEN");
const rooms = env("ROOMS").split(",");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, ok, ms = 15000) {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) {
    if (ok()) return;
  }
  throw new Error("timed out waiting for " + what);
}

const client = sdk.createClient({ baseUrl: base, accessToken: alice.token, userId: alice.userId, deviceId: alice.deviceId });
client.getLogger?.().setLevel?.("warn");
const lists = new Map([["all", {
  ranges: [[0, 19]], timeline_limit: 1,
  required_state: [["m.room.name", ""], ["m.room.create", ""], ["m.room.member", "$LAZY"]],
}]]);
const ss = new SlidingSync(base, lists, { timeline_limit: 10, required_state: [["*", "*"]] }, client, 5000);
let count = -1;
ss.on("SlidingSync.Lifecycle", (state, resp) => {
  if (resp?.lists?.all) count = resp.lists.all.count;
});
const seen = [];
client.on(sdk.RoomEvent.Timeline, (ev, room) => {
  if (ev.getType() === "m.room.message") seen.push(room.roomId + " " + ev.getContent().body);
});
try {
  await client.startClient({ slidingSync: ss });
  await until("the room list", () => count === rooms.length && client.getRooms().length === rooms.length);
  const names = client.getRooms().map((r) => r.name).sort();
  const live = rooms[1];
  const r = await fetch(`${base}/_matrix/client/v3/rooms/${encodeURIComponent(live)}/send/m.room.message/js-live`, {
    method: "PUT", headers: { Authorization: "Bearer " + bobToken }, body: JSON.stringify({ msgtype: "m.text", body: "live message" }),
  });
  if (r.status !== 200) throw new Error("send: " + r.status);
  await until("the live message", () => seen.includes(live + " live message"));
  console.log(JSON.stringify({ names, seen }));
  console.log("RESULT OK");
} catch (e) {
  console.log("RESULT FAIL " + e.message + " " + JSON.stringify({ count, rooms: client.getRooms().length, seen }));
} finally {
  ss.stop();
  client.stopClient();
  process.exit(0);
}
