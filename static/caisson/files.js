// The Files tab's download: queue the read, follow its job, then fetch the bytes it staged as a download.
(() => {
  "use strict";
  const form = document.getElementById("files-pull");
  if (!form) return;
  const state = document.getElementById("pull-state");
  const csrf = () => (form.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function follow(job) {
    for (;;) {
      const response = await fetch("/api/jobs/" + job + "/", { credentials: "same-origin" });
      const data = await response.json();
      if (data.status === "ok") return null;
      if (data.status === "error" || data.status === "cancelled") return data.message || data.status;
      await sleep(300);
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    state.textContent = "reading…";
    const response = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: { "X-Requested-With": "fetch", "X-CSRFToken": csrf() } });
    const data = await response.json();
    if (!response.ok) {
      state.textContent = (data.error || {}).message || "refused";
      return;
    }
    const failed = await follow(data.job.id);
    if (failed) {
      state.textContent = failed;
      return;
    }
    state.textContent = "done";
    const link = document.createElement("a");
    link.href = form.dataset.pulled.replace(/\/0$/, "/" + data.job.id);
    link.download = "";
    link.id = "pull-link";
    document.body.append(link);
    link.click();
    link.remove();
  });
})();
