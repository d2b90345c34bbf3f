// A live chat room through the gateway with @wsgateway/client: every
// member subscribes to one channel and publishes JSON messages on it.
//
// The form, or the URL fragment, gives the gateway URL, an access key, the
// channel and a name: chat.html#url=ws://127.0.0.1:8080/api/ws&key=KEY&channel=room&name=ann
// (a key in the fragment never reaches a web server's logs). With all of
// them in the fragment the page joins at once.
//
// Presence: a member announces itself when it joins ({"type":"join"}),
// and answers the join of a member it has not seen with {"type":"here"},
// so every member learns who is in the room whoever joined first.
//
// For demonstrations and the repository's browser test, two more
// fragment parameters drive the page: say=TEXT sends TEXT once another
// member is here, expect=N sets window.testResult (the members and the
// messages) once N chat messages are shown.
import { GatewayClient } from "../dist/index.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.hash.slice(1));
for (const f of ["url", "key", "channel", "name"]) if (params.get(f)) $(f).value = params.get(f);
if (!$("url").value) $("url").value = `${location.protocol === "https:" ? "wss" : "ws"}://${location.hostname || "127.0.0.1"}:8080/api/ws`;

const me = { id: Math.random().toString(36).slice(2, 10), name: "" };
const members = new Map(); // id -> name
const shown = []; // chat messages shown: {from, text}
let client, channel, said = false;

function line(cls, ...parts) {
  const li = document.createElement("li");
  li.className = cls;
  for (const [c, text] of parts) {
    const span = document.createElement("span");
    span.className = c;
    span.textContent = text;
    li.append(span);
  }
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

function status(text, cls = "") {
  $("status").textContent = text;
  $("status").className = cls;
}

function renderMembers() {
  $("members").replaceChildren(...[me.name, ...members.values()].map((n) => Object.assign(document.createElement("li"), { textContent: n })));
}

const send = (msg) => client.publish(channel, JSON.stringify({ ...msg, id: me.id, name: me.name }));

function receive(payload) {
  let m;
  try {
    m = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return line("notice", ["notice", "(a message that is not chat JSON)"]);
  }
  if (m.type === "join" || m.type === "here") {
    if (m.id === me.id || members.has(m.id)) return;
    members.set(m.id, String(m.name));
    renderMembers();
    line("notice", ["notice", `${m.name} is here`]);
    if (m.type === "join") send({ type: "here" }).catch(report);
    return sayOnce();
  }
  if (m.type === "leave") {
    members.delete(m.id);
    renderMembers();
    return line("notice", ["notice", `${m.name} left`]);
  }
  if (m.type !== "chat") return;
  shown.push({ from: String(m.name), text: String(m.text) });
  line("chat", ["from", `${m.name}:`], ["text", String(m.text)]);
  const expect = Number(params.get("expect"));
  if (expect && shown.length >= expect) window.testResult = { name: me.name, state: client.state, members: [...members.values()].sort(), messages: shown };
}

function sayOnce() {
  const text = params.get("say");
  if (!text || said || !members.size) return;
  said = true;
  send({ type: "chat", text }).catch(report);
}

function report(e) {
  line("notice", ["notice", `error: ${e.message}`]);
}

async function join(ev) {
  ev?.preventDefault();
  if (client) client.close();
  channel = $("channel").value.trim();
  me.name = $("name").value.trim() || `guest-${me.id.slice(0, 4)}`;
  members.clear();
  renderMembers();
  try {
    // echo: our own messages come back, so the list shows what the room saw.
    client = new GatewayClient($("url").value.trim(), { key: $("key").value.trim(), echo: true, name: `chat ${me.name}` });
  } catch (e) {
    return status(`bad settings: ${e.message}`, "closed");
  }
  client.on("state", (s, err) => {
    status(err ? `${s}: ${err.message}` : s, s);
    $("text").disabled = $("send").disabled = s !== "connected";
  });
  client.on("subscribed", (ev) => {
    // Back after a reconnect: announce again (members may have changed).
    if (ev.resubscribed) send({ type: "join" }).catch(report);
  });
  try {
    await client.connect();
    await client.subscribe(channel, receive);
    line("notice", ["notice", `joined ${channel} as ${me.name}`]);
    await send({ type: "join" });
  } catch (e) {
    status(`could not join: ${e.message}`, "closed");
  }
}

$("join").addEventListener("submit", join);
$("say").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  send({ type: "chat", text }).then(() => ($("text").value = ""), report);
});
addEventListener("pagehide", () => client?.state === "connected" && send({ type: "leave" }).finally(() => client.close()));
if (params.get("key") && params.get("url")) join();
