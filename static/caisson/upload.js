/* A template upload on a storage's page: the file goes in 8 MiB chunks (PUT with Content-Range) to the API,
 * which hands each to the node; the node's offset says where to go on, so a broken connection or a reload
 * resumes where the node's file ends (the upload's id is kept in this browser, keyed by name and size).
 * At the end the node's SHA-256 of the file is shown, to compare with the one the template's source gives.
 */
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const CHUNK = 8 * 1024 * 1024;
  const bar = document.getElementById("upload-progress");
  const said = document.getElementById("upload-status");
  const sum = document.getElementById("upload-sha256");
  const csrf = () => (form.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";
  const headers = (extra) => Object.assign({ "X-CSRFToken": csrf(), "X-Requested-With": "fetch" }, extra || {});
  const message = (data, response) => ((data || {}).error || {}).message || "refused (" + response.status + ")";

  async function open(file) {
    const key = "caisson-upload:" + form.dataset.node + ":" + file.name + ":" + file.size;
    const known = localStorage.getItem(key);
    if (known) {
      const response = await fetch(known, { headers: headers(), credentials: "same-origin" });
      if (response.ok) {
        const data = await response.json();
        if (!data.done && !data.error) return { location: known, offset: data.offset, key };
      }
    }
    const response = await fetch(form.dataset.start, {
      method: "POST", credentials: "same-origin",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ filename: file.name, size: file.size }),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(message(data, response));
    localStorage.setItem(key, data.location);
    return { location: data.location, offset: 0, key };
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) return;
    sum.textContent = "";
    try {
      const upload = await open(file);
      let offset = upload.offset;
      while (offset < file.size) {
        const end = Math.min(offset + CHUNK, file.size);
        const response = await fetch(upload.location, {
          method: "PUT", credentials: "same-origin", body: file.slice(offset, end),
          headers: headers({ "Content-Type": "application/octet-stream",
                             "Content-Range": "bytes " + offset + "-" + (end - 1) + "/" + file.size }),
        });
        const data = await response.json();
        if (response.status === 416) { offset = data.offset; continue; }
        if (!response.ok) throw new Error(message(data, response));
        offset = data.offset;
        bar.value = offset / file.size;
        said.textContent = offset + " of " + file.size + " bytes on the node";
        if (data.done) {
          sum.textContent = data.sha256;
          said.textContent = file.name + ": stored on the node";
          localStorage.removeItem(upload.key);
        }
      }
    } catch (e) {
      said.textContent = "Upload failed: " + e.message + " (send the file again to resume)";
    }
  });
})();
