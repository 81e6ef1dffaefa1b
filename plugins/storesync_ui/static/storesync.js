// The Storesync view's only script: the replay and resolve actions. Posts to the plugin's own API
// (which triggers the replay DAG through Airflow's REST API as the logged-in user) and shows the run.
"use strict";

(function () {
  const body = document.body;
  const base = body.dataset.base;

  function picked(kind) {
    return Array.from(document.querySelectorAll("#" + kind + " input.pick:checked")).map((box) => Number(box.value));
  }

  // What each resolution means, said before it happens: a resend of a row that did arrive duplicates it.
  const RESOLUTIONS = {
    "mark-arrived": {
      resolution: "arrived",
      confirm: (n) => "Mark " + n + " held deliveries as arrived?\n\nOnly if you found them at the vendor: " +
        "they are recorded accepted and never sent again.",
      started: "Marking arrived: ",
    },
    resend: {
      resolution: "resend",
      confirm: (n) => "Resend " + n + " held deliveries?\n\nOnly if you checked the vendor does not have them: " +
        "any that did arrive will be there twice. Rows still awaiting their own lookup are not resent.",
      started: "Resending: ",
    },
  };

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

  async function post(path, request, output, started) {
    show(output, "Triggering…");
    try {
      const response = await fetch(base + path, {
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
      show(output, started + answer.dag_run_id, answer.url);
      output.dataset.runId = answer.dag_run_id;
    } catch (error) {
      show(output, "Could not reach the server: " + error, null, true);
    }
  }

  function resolve(action, output) {
    const ids = picked("held");
    if (ids.length === 0) {
      show(output, "Choose the held deliveries first.", null, true);
      return;
    }
    const meaning = RESOLUTIONS[action];
    if (!window.confirm(meaning.confirm(ids.length))) {
      return;
    }
    post("api/actions/resolve", { store: body.dataset.store, ids: ids, resolution: meaning.resolution },
      output, meaning.started);
  }

  async function replay(action, output) {
    const ids = picked("dead");
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
    post("api/actions/replay", request, output, request.dry_run ? "Dry run started: " : "Replay started: ");
  }

  document.querySelectorAll(".actions button[data-action]").forEach((button) => {
    button.addEventListener("click", () => {
      const output = button.closest(".actions").querySelector(".action-result");
      if (button.closest(".actions").dataset.kind === "held") {
        resolve(button.dataset.action, output);
      } else {
        replay(button.dataset.action, output);
      }
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
