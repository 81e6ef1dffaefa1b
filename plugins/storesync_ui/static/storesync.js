// The Storesync view's only script: the replay actions. Posts to the plugin's own API (which
// triggers the replay DAG through Airflow's REST API as the logged-in user) and shows the run.
"use strict";

(function () {
  const body = document.body;
  const base = body.dataset.base;

  function picked() {
    return Array.from(document.querySelectorAll("#dead input.pick:checked")).map((box) => Number(box.value));
  }

  function show(output, message, link, failed) {
    output.textContent = message;
    output.classList.toggle("bad", Boolean(failed));
    if (link) {
      const anchor = document.createElement("a");
      anchor.href = link;
      anchor.target = "_top";  // leave the UI's frame for Airflow's own run page
      anchor.textContent = " open the run";
      output.appendChild(anchor);
    }
  }

  async function replay(action, output) {
    const ids = picked();
    if (action === "replay-selected" && ids.length === 0) {
      show(output, "Choose the dead letters to replay first.", null, true);
      return;
    }
    const params = new URLSearchParams(window.location.search);
    const request = {
      store: body.dataset.store,
      ids: action === "replay-all" ? [] : ids,
      vendor: params.get("vendor") || null,
      dry_run: action === "dry-run",
      all_matching: action === "replay-all" || (action === "dry-run" && ids.length === 0),
    };
    if (action === "replay-all" && !window.confirm("Replay every dead letter these filters show?")) {
      return;
    }
    show(output, "Triggering…");
    try {
      const response = await fetch(base + "api/actions/replay", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(request),
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        show(output, "Refused (" + response.status + "): " + JSON.stringify(answer.detail || answer), null, true);
        return;
      }
      show(output, (request.dry_run ? "Dry run started: " : "Replay started: ") + answer.dag_run_id, answer.url);
      output.dataset.runId = answer.dag_run_id;
    } catch (error) {
      show(output, "Could not reach the server: " + error, null, true);
    }
  }

  document.querySelectorAll(".actions button[data-action]").forEach((button) => {
    button.addEventListener("click", () => {
      replay(button.dataset.action, button.closest(".actions").querySelector(".action-result"));
    });
  });
  document.querySelectorAll("input.select-all").forEach((all) => {
    all.addEventListener("change", () => {
      all.closest("table").querySelectorAll("input.pick").forEach((box) => { box.checked = all.checked; });
    });
  });
  document.querySelectorAll(".filters select").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
})();
