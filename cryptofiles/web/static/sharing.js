// The sharing panel of one file: who else may fetch its key (grants), its share links, and its
// access history; everything through the API (api.js), the link's key from keys.js.

import { api } from "./api.js";
import { fileKey } from "./keys.js";

const $ = (id) => document.getElementById(id);
let current = null; // { file, session, fail, notify }

function item(text, buttonLabel, onClick) {
  const li = document.createElement("li");
  li.className = "transfer";
  const span = document.createElement("span");
  span.textContent = text;
  li.append(span);
  if (buttonLabel) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Revoke";
    button.setAttribute("aria-label", buttonLabel);
    button.addEventListener("click", () => onClick().catch(current.fail));
    li.append(" ", button);
  }
  return li;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "until revoked");

async function refresh() {
  const { file, session } = current;
  const [grants, links, history] = await Promise.all([
    api.grants(session.token, file.id),
    api.links(session.token, file.id),
    api.events(session.token, file.id),
  ]);
  $("grants").replaceChildren(
    ...grants.grants.map((g) =>
      item(`${g.user}, ${when(g.expires_at)}`, `Revoke ${g.user}'s access`, async () => {
        await api.revokeGrant(session.token, file.id, g.user);
        current.notify(`${g.user} may no longer fetch the key.`);
        await refresh();
      }),
    ),
  );
  $("links").replaceChildren(
    ...links.links.map((l) => {
      const uses = l.max_downloads ? `${l.downloads} of ${l.max_downloads}` : `${l.downloads}`;
      return item(`Link until ${when(l.expires_at)}, downloads: ${uses}`, "Revoke this link",
        async () => {
          await api.revokeLink(session.token, file.id, l.id);
          current.notify("The link is revoked.");
          await refresh();
        });
    }),
  );
  $("events").replaceChildren(
    ...history.events.map((e) => {
      const extra = e.grantee_name ? ` ${e.grantee_name}` : e.sealed ? " (sealed)" : "";
      return item(`${when(e.at)}: ${e.action}${extra} by ${e.user.name} from ${e.client}`);
    }),
  );
}

export async function openSharing(file, context) {
  current = { file, ...context };
  $("share-file").textContent = file.name || file.id;
  $("link-made").hidden = true;
  $("link-url").value = "";
  $("share-panel").hidden = false;
  await refresh();
  $("grant-user").focus();
}

export function closeSharing() {
  current = null;
  $("link-url").value = "";
  $("share-panel").hidden = true;
}

async function grant(event) {
  event.preventDefault();
  const { file, session } = current;
  const user = $("grant-user").value.trim();
  const until = $("grant-until").value; // local time, as the person typed it
  await api.grant(session.token, file.id, user, until ? new Date(until).toISOString() : null);
  $("grant-form").reset();
  current.notify(`${user} may now fetch this file's key.`);
  await refresh();
}

// The key goes after "#": browsers never send a URL's fragment, so the server never sees it.
async function createLink(event) {
  event.preventDefault();
  const { file, session } = current;
  const key = await fileKey(session.token, file.id, session.name);
  const days = Number($("link-days").value || 7);
  const settings = { expires_at: new Date(Date.now() + days * 86_400_000).toISOString() };
  if ($("link-max").value) settings.max_downloads = Number($("link-max").value);
  const link = await api.createLink(session.token, file.id, settings);
  const fragment = btoa(String.fromCharCode(...key)).replace(/\+/g, "-").replace(/\//g, "_");
  $("link-url").value = `${link.url}#k=${fragment.replace(/=+$/, "")}`;
  $("link-made").hidden = false;
  $("link-url").select();
  current.notify("Link made: anyone holding it can download and decrypt this file.");
  await refresh();
}

for (const [id, handler] of [["grant-form", grant], ["link-form", createLink]]) {
  $(id).addEventListener("submit", (event) => {
    if (current) handler(event).catch(current.fail);
  });
}
$("share-close").addEventListener("click", closeSharing);
$("link-copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("link-url").value);
    current?.notify("Link copied to the clipboard.");
  } catch {
    $("link-url").select();
  }
});
