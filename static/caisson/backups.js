/* Backup pages: the schedule form's live preview of the next runs, and saving it with field errors in place.
 * Backup, restore, verify and the rest are ordinary data-async forms (live.js): their jobs show in the task
 * panel with progress and log, and the page reloads when they end well (data-reload-on-done).
 */
(function () {
  "use strict";
  const root = document.getElementById("backup-schedules");
  const form = document.getElementById("schedule-form");
  if (!root || !form) return;
  const input = document.getElementById("schedule-text");
  const preview = document.getElementById("schedule-preview");
  let timer = null;

  async function showNextRuns() {
    const text = input.value.trim();
    if (!text) { preview.textContent = ""; return; }
    try {
      const response = await fetch(root.dataset.previewUrl + "?schedule=" + encodeURIComponent(text),
                                   { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
      const data = await response.json();
      preview.classList.toggle("error", !response.ok);
      const refused = response.ok ? "" : (data.error || {}).message || "refused (" + response.status + ")";
      preview.textContent = response.ok ? "Next runs: " + (data.shown.join(", ") || "none") : refused;
      input.setCustomValidity(refused);
    } catch (e) {
      preview.textContent = "";
    }
  }

  function clearErrors() {
    form.querySelectorAll(".field-error").forEach((el) => el.remove());
  }

  function showErrors(errors) {
    for (const [field, messages] of Object.entries(errors || {})) {
      const target = form.querySelector(`[name="${field}"]`) || form.querySelector(".form-actions");
      const note = document.createElement("span");
      note.className = "field-error error";
      note.textContent = messages.join(" ");
      (target.closest("label") || target).after(note);
    }
  }

  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(showNextRuns, 250); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
    const response = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin",
                                                headers: { "X-Requested-With": "fetch", "X-CSRFToken": csrf } });
    const data = await response.json().catch(() => ({}));
    if (response.ok) { location.href = form.dataset.doneUrl; return; }
    const error = data.error || {};
    const fields = error.fields || {};
    showErrors(Object.keys(fields).length ? fields
      : { non_field_errors: [error.message || "refused (" + response.status + ")"] });
  });
  showNextRuns();
})();
