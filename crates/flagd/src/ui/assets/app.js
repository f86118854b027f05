// flagd's web UI: enhancements of pages that work without this script.
// - forms with data-confirm ask in a dialog before they post (the server asks on its own page
//   when this script does not run);
// - the page follows its environment's change feed (body[data-live]) and refreshes what is
//   shown within a second of a change made anywhere;
// - rollout weights show their total as they are typed.
"use strict";

(function () {
  // Delegated, so forms swapped in by a live refresh ask too.
  function confirmForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!(form instanceof HTMLFormElement) || !form.matches("form[data-confirm]")) return;
      (function () {
        if (form.dataset.confirmed === "1") return;
        event.preventDefault();
        var dialog = document.createElement("dialog");
        dialog.setAttribute("aria-labelledby", "confirm-title");
        var title = document.createElement("h2");
        title.id = "confirm-title";
        title.textContent = form.dataset.confirm;
        var yes = document.createElement("button");
        yes.type = "button";
        yes.className = "danger";
        yes.textContent = form.dataset.confirmButton || "Confirm";
        var no = document.createElement("button");
        no.type = "button";
        no.textContent = "Cancel";
        var row = document.createElement("p");
        row.append(yes, " ", no);
        dialog.append(title, row);
        document.body.append(dialog);
        dialog.addEventListener("close", function () { dialog.remove(); });
        no.addEventListener("click", function () { dialog.close(); });
        yes.addEventListener("click", function () {
          var confirm = document.createElement("input");
          confirm.type = "hidden";
          confirm.name = "confirm";
          confirm.value = "1";
          form.append(confirm);
          form.dataset.confirmed = "1";
          dialog.close();
          form.submit();
        });
        dialog.showModal();
        no.focus();
      })();
    });
  }

  // Replaces the element with id `id` by its counterpart in a fresh copy of this page.
  function refresh(ids) {
    return fetch(location.href, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var fresh = new DOMParser().parseFromString(text, "text/html");
        ids.forEach(function (id) {
          var now = document.getElementById(id);
          var next = fresh.getElementById(id);
          if (now && next) now.replaceWith(document.adoptNode(next));
        });
        bind(document);
      });
  }

  var dirty = false;
  function follow() {
    var url = document.body.dataset.live;
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    source.addEventListener("change", function (event) {
      var change = {};
      try { change = JSON.parse(event.data); } catch (e) { return; }
      var live = document.querySelector("[data-live-key]");
      // A page about one item (a flag: its own changes, kills and overrides; a segment: its
      // own changes) looks again only for that item, or for the whole environment.
      var kinds = live && (live.dataset.liveKind || "flag kill override").split(" ");
      if (live && change.kind !== "environment" &&
          (live.dataset.liveKey !== change.key || kinds.indexOf(change.kind) < 0)) return;
      if (dirty && live) {
        var notice = document.getElementById("changed-notice");
        if (notice) notice.hidden = false;
        return;
      }
      var ids = [];
      document.querySelectorAll("[data-refresh]").forEach(function (el) { ids.push(el.id); });
      if (ids.length) refresh(ids);
    });
  }

  function rolloutTotals(root) {
    root.querySelectorAll("[data-rollout]").forEach(function (group) {
      var out = group.querySelector("[data-rollout-total]");
      function update() {
        var total = 0;
        group.querySelectorAll("input[data-weight]").forEach(function (input) {
          var v = parseFloat(input.value);
          if (!isNaN(v)) total += Math.round(v * 1000);
        });
        if (out) {
          out.textContent = "Total: " + (total / 1000) + "%";
          out.classList.toggle("error", total !== 100000);
        }
      }
      group.addEventListener("input", update);
      update();
    });
  }

  function bind(root) {
    rolloutTotals(root);
  }

  document.addEventListener("DOMContentLoaded", function () {
    confirmForms();
    bind(document);
    // Delegated, so a form swapped in by a refresh is tracked too.
    document.addEventListener("input", function (event) {
      if (event.target.closest && event.target.closest("form[data-track-edits]")) dirty = true;
    });
    follow();
    document.documentElement.dataset.ready = "1";
  });
})();

// --- segments, live ---
// A big segment's members file goes up with a progress bar: the file alone as the body, the
// CSRF token in a header. Without this script the form posts it as multipart/form-data.
(function () {
  function upload(form, event) {
    var input = form.querySelector("input[type=file]");
    var file = input && input.files && input.files[0];
    if (!file || !window.XMLHttpRequest) return;
    event.preventDefault();
    var progress = form.querySelector("progress");
    var result = form.querySelector("output");
    var button = form.querySelector("button[type=submit]");
    var replace = form.querySelector("input[name=replace]");
    var token = form.querySelector("input[name=_csrf]");
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action + (replace && replace.checked ? "?replace=true" : ""));
    xhr.setRequestHeader("X-CSRF-Token", token ? token.value : "");
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    if (progress) {
      progress.hidden = false;
      progress.value = 0;
    }
    if (result) {
      result.textContent = "Uploading " + file.name + "…";
      result.classList.remove("error");
    }
    if (button) button.disabled = true;
    xhr.upload.onprogress = function (e) {
      if (progress && e.lengthComputable) progress.value = Math.round((e.loaded / e.total) * 100);
    };
    function failed(message) {
      if (button) button.disabled = false;
      if (progress) progress.hidden = true;
      if (result) {
        result.textContent = message;
        result.classList.add("error");
      }
    }
    xhr.onload = function () {
      var answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch (e) { answer = {}; }
      if (xhr.status >= 200 && xhr.status < 300) {
        if (progress) progress.value = 100;
        if (result) result.textContent = answer.message || "Uploaded.";
        // The page again, with the message and the new generation.
        location.assign(answer.location || location.href);
      } else {
        failed(answer.message || ("The upload failed (" + xhr.status + "). Nothing was changed."));
      }
    };
    xhr.onerror = function () { failed("The upload could not reach flagd. Nothing was changed."); };
    xhr.send(file);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.matches("form[data-upload]")) upload(form, event);
  });
})();
// --- flag editor ---
// A form shown again with edits that are not saved yet (after Add rule, or a refused save)
// counts as edited from the start: a live change of the flag then shows the notice instead of
// replacing the form. Registered after the listeners above, which count the edits.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form[data-pending]").forEach(function (form) {
    form.dispatchEvent(new Event("input", { bubbles: true }));
  });
});
