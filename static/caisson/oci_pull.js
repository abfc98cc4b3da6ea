/* The "pull from registry" form of the templates page: "List tags" asks the registry (through the API, a POST
 * so that a password never sits in a URL) and offers the tags as choices of the image field. The pull itself
 * is an ordinary data-async form (live.js): its job shows in the task panel with progress and log.
 */
(function () {
  "use strict";
  const form = document.getElementById("oci-pull-form");
  if (!form) return;
  const reference = document.getElementById("oci-reference");
  const choices = document.getElementById("oci-tags");
  const note = document.getElementById("oci-tags-note");

  function repository() {
    const text = reference.value.trim().split("@")[0];
    const slash = text.lastIndexOf("/");
    const colon = text.lastIndexOf(":");
    return colon > slash ? text.slice(0, colon) : text;
  }

  document.getElementById("oci-list-tags").addEventListener("click", async () => {
    const repo = repository();
    if (!repo) { note.textContent = "name an image first"; return; }
    note.textContent = "asking the registry…";
    const body = { repository: repo, username: form.username.value, password: form.password.value };
    try {
      const response = await fetch(form.dataset.tagsUrl, {
        method: "POST", credentials: "same-origin", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", "X-Requested-With": "fetch",
                   "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value } });
      const data = await response.json();
      if (!response.ok) { note.textContent = (data.error || {}).message || "refused (" + response.status + ")"; return; }
      choices.replaceChildren(...data.map((tag) => Object.assign(document.createElement("option"), { value: repo + ":" + tag })));
      note.textContent = data.length + " tag(s): " + data.slice(-10).join(", ");
    } catch (e) {
      note.textContent = "the registry could not be asked";
    }
  });
})();
