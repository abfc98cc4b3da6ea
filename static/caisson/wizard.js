/* The create wizard: one form, a tab per step; "Next" asks the server to check the step and shows its errors
 * beside the fields. The Confirm tab shows the server's summary; Finish creates and opens the container. */
(function () {
  "use strict";
  const form = document.getElementById("wizard");
  if (!form) return;
  const steps = Array.from(form.querySelectorAll("fieldset[data-step]")).map((f) => f.dataset.step);
  let reached = 0;
  let busy = false;

  function headers() {
    return { "X-Requested-With": "fetch", "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value };
  }

  function show(step) {
    const index = steps.indexOf(step);
    reached = Math.max(reached, index);
    form.querySelectorAll("fieldset[data-step]").forEach((f) => { f.hidden = f.dataset.step !== step; });
    form.querySelectorAll("[data-step-tab]").forEach((tab) => {
      const i = steps.indexOf(tab.dataset.stepTab);
      tab.classList.toggle("current", i === index);
      tab.disabled = i > reached;
    });
    form.dataset.active = step;
    if (step === "confirm") loadSummary();
  }

  function clearErrors() {
    form.querySelectorAll("[data-errors-for]").forEach((ul) => { ul.textContent = ""; });
    form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
    const general = document.getElementById("wizard-error");
    general.hidden = true;
    general.textContent = "";
  }

  // A refusal's field errors, or its message as one of no field (the body: webui/errors.py).
  function fieldsOf(data) {
    const error = data.error || {};
    const fields = error.fields || {};
    return Object.keys(fields).length ? fields : { non_field_errors: [error.message || "refused"] };
  }

  function showErrors(errors) {
    clearErrors();
    const loose = [];
    for (const [field, messages] of Object.entries(errors || {})) {
      const list = form.querySelector(`[data-errors-for="${field}"]`);
      if (!list) { loose.push(...messages.map((m) => (field === "non_field_errors" ? m : field + ": " + m))); continue; }
      messages.forEach((m) => { const li = document.createElement("li"); li.textContent = m; list.append(li); });
      const input = form.querySelector(`[name="${field}"]`);
      if (input) input.classList.add("invalid");
    }
    if (loose.length) {
      const general = document.getElementById("wizard-error");
      general.textContent = loose.join(" ");
      general.hidden = false;
    }
  }

  async function post(url) {
    const response = await fetch(url, { method: "POST", body: new FormData(form), headers: headers(),
      credentials: "same-origin" });
    let data = {};
    try { data = await response.json(); } catch (e) { data = { error: { message: "the server answered " + response.status } }; }
    return { ok: response.ok, status: response.status, data };
  }

  async function next(step) {
    if (busy) return;
    busy = true;
    try {
      const { ok, data } = await post(form.dataset.validate.replace("STEP", step));
      if (!ok) { showErrors(fieldsOf(data)); return; }
      clearErrors();
      show(steps[steps.indexOf(step) + 1]);
    } finally {
      busy = false;
    }
  }

  async function loadSummary() {
    const table = document.getElementById("wizard-summary");
    const { ok, data } = await post(form.dataset.summary);
    if (!ok) {
      show((data.error || {}).step || "general");
      showErrors(fieldsOf(data));
      return;
    }
    const body = document.createElement("tbody");
    for (const [key, value] of data.summary) {
      const tr = document.createElement("tr");
      const th = document.createElement("th"); th.textContent = key;
      const td = document.createElement("td"); td.textContent = value;
      tr.append(th, td);
      body.append(tr);
    }
    table.replaceChildren(body);
  }

  function filterTemplates() {
    // Templates and bridges: only the chosen node's.
    const node = form.querySelector("[name=node]").value;
    for (const select of form.querySelectorAll("select[name=template], select[name=bridge], select[name=storage]")) {
      for (const option of select.options) {
        if (!option.dataset.node) continue;
        option.hidden = option.disabled = option.dataset.node !== node;
        if (option.selected && option.hidden) select.value = "";
      }
      if (select.name === "storage" && !select.value) {
        const first = [...select.options].find((o) => !o.hidden);
        if (first) select.value = first.value;
      }
    }
  }

  form.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const step = form.dataset.active;
    if (button.hasAttribute("data-next")) { event.preventDefault(); next(step); }
    else if (button.hasAttribute("data-back")) { event.preventDefault(); clearErrors(); show(steps[steps.indexOf(step) - 1]); }
    else if (button.dataset.stepTab) { event.preventDefault(); show(button.dataset.stepTab); }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    busy = true;
    const finish = document.getElementById("wizard-finish");
    finish.disabled = true;
    try {
      const { ok, data } = await post(form.getAttribute("action"));
      if (ok && data.location) { window.location.assign(data.location); return; }
      show((data.error || {}).step || "confirm");
      showErrors(fieldsOf(data));
    } finally {
      busy = false;
      finish.disabled = false;
    }
  });

  form.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.target.tagName === "TEXTAREA" || event.target.tagName === "BUTTON") return;
    event.preventDefault(); // Enter means "Next", not "create now"
    if (form.dataset.active !== "confirm") next(form.dataset.active);
  });
  // A storage that cannot enforce a size gets none: the size field is hidden and sent empty.
  function offerSize() {
    const node = form.querySelector("[name=node]").value;
    const name = form.querySelector("[name=storage]").value;
    const known = [...document.querySelectorAll("#id_storage option")]
      .find((o) => o.value === name && o.dataset.node === node);
    const sized = !known || known.dataset.enforcesSize !== "0";
    const field = document.getElementById("field-disk_size");
    field.hidden = !sized;
    if (!sized) form.querySelector("[name=disk_size]").value = "";
  }

  // A field's errors go once it is edited: the server checks it again at Next, and stale errors mislead.
  function clearFieldErrors(event) {
    const name = event.target.name;
    if (!name) return;
    const list = form.querySelector(`[data-errors-for="${CSS.escape(name)}"]`);
    if (list) list.textContent = "";
    event.target.classList.remove("invalid");
    if (name === "password" || name === "password_confirm") {
      form.querySelectorAll('[data-errors-for="password"], [data-errors-for="password_confirm"]')
        .forEach((ul) => { ul.textContent = ""; });
    }
  }
  form.addEventListener("input", clearFieldErrors);
  form.addEventListener("change", clearFieldErrors);

  form.querySelector("[name=node]").addEventListener("change", () => { filterTemplates(); offerSize(); });
  form.querySelector("[name=storage]").addEventListener("change", offerSize);
  filterTemplates();
  offerSize();
  const start = form.dataset.active || "general";
  reached = steps.indexOf(start);
  show(start);
})();
