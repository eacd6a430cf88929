// The job server's page: a form per registered function, and a live table of jobs.
//
// Every value that comes from a job (arguments, results, errors, progress messages) reaches
// the page as text: it is put in with textContent or as an attribute, never parsed as HTML.
(function () {
  "use strict";

  const settings = JSON.parse(document.getElementById("page-settings").textContent);
  const urls = settings.urls;
  const CANCELABLE = new Set(["queued", "started", "deferred", "scheduled"]);
  const REQUEUEABLE = new Set(["failed", "stopped", "canceled"]);
  const ENDED = new Set(["finished", "failed", "stopped", "canceled"]);
  const LONG_TEXT = new Set(["body", "html", "text", "message", "content"]);
  const POLL_MS = 2000;
  const STREAM_RETRY_MS = 30000;
  // The server's clock minus ours: times shown are computed from the server's timestamps.
  const skew = Date.parse(settings.server_time) - Date.now();

  // --- Small helpers ------------------------------------------------------------------------

  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") element.textContent = value;
      else if (name in element && typeof value !== "string") element[name] = value;
      else element.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      element.append(child instanceof Node ? child : String(child));
    }
    return element;
  }

  function jobUrl(template, jobId) {
    return template.replace("JOB_ID", encodeURIComponent(jobId));
  }

  function announce(message) {
    const announcer = document.getElementById("announcer");
    announcer.textContent = "";
    window.setTimeout(() => { announcer.textContent = message; }, 50);
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (ignored) { /* not JSON */ }
    return `The server answered ${response.status} ${response.statusText}.`;
  }

  function seconds(ms) {
    const s = Math.max(0, ms / 1000);
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }

  function serverNow() {
    return Date.now() + skew;
  }

  // --- The form -----------------------------------------------------------------------------

  const form = document.getElementById("job-form");
  const functionSelect = document.getElementById("function");
  const functionDoc = document.getElementById("function-doc");
  const fields = document.getElementById("fields");
  const queueSelect = document.getElementById("opt-queue");
  const timeoutInput = document.getElementById("opt-timeout");
  const delayInput = document.getElementById("opt-delay");
  const formStatus = document.getElementById("form-status");
  const submitButton = document.getElementById("submit");
  const functions = new Map(settings.functions.map((fn) => [fn.name, fn]));
  const submitted = new Set();

  function typesOf(param) {
    return param.type ? param.type.split(" or ") : [];
  }

  const JSON_TYPES = new Set(["file", "boolean", "integer", "number", "string", "array", "object", "null"]);

  function inputKind(param) {
    const types = typesOf(param).filter((type) => type !== "null");
    // No hint, or one that is no JSON type (Any): JSON if it parses, else text.
    if (types.length === 0 || types.some((type) => !JSON_TYPES.has(type))) return "any";
    if (types.includes("file")) return "file";
    if (types.length === 1 && types[0] === "boolean") return "boolean";
    if (types.length === 1 && (types[0] === "integer" || types[0] === "number")) return types[0];
    if (types.length === 1 && types[0] === "string") return "string";
    if (types.length === 2 && types.includes("string") && types.includes("array")) return "string-or-array";
    return "json";
  }

  function hintFor(param, kind) {
    const parts = [];
    const described = {
      file: "a file",
      boolean: "true or false",
      integer: "a whole number",
      number: "a number",
      string: "text",
      "string-or-array": "text, or a JSON array such as [\"a\", \"b\"]",
      any: "JSON (such as {\"a\": 1}) or plain text",
      json: `JSON: ${param.type}`,
    };
    parts.push(described[kind]);
    if (!param.required && (!("default" in param) || param.default === null)) parts.push("optional");
    return parts.join(" · ");
  }

  function defaultText(param, kind) {
    if (!("default" in param) || param.default === null) return "";
    if (kind === "boolean") return param.default ? "true" : "false";
    if (typeof param.default === "string") return param.default;
    return typeof param.default === "number" ? String(param.default) : JSON.stringify(param.default);
  }

  function fieldFor(param) {
    const kind = inputKind(param);
    const id = `arg-${param.name}`;
    const hintId = `${id}-hint`;
    const common = { id, name: param.name, "aria-describedby": hintId, "data-kind": kind };
    let input;
    if (kind === "file") {
      input = h("input", { ...common, type: "file" });
    } else if (kind === "boolean") {
      input = h("select", common,
        h("option", { value: "", text: param.required ? "Choose…" : "(default)" }),
        h("option", { value: "true", text: "true" }),
        h("option", { value: "false", text: "false" }));
    } else if (kind === "integer" || kind === "number") {
      input = h("input", { ...common, type: "number", step: kind === "integer" ? "1" : "any",
        inputmode: kind === "integer" ? "numeric" : "decimal" });
    } else if (kind === "string" && !LONG_TEXT.has(param.name)) {
      input = h("input", { ...common, type: "text", autocomplete: "off" });
    } else {
      input = h("textarea", { ...common, rows: kind === "string" ? 4 : 3, spellcheck: kind === "string" });
    }
    input.value = kind === "file" ? "" : defaultText(param, kind);
    if (param.required) input.setAttribute("aria-required", "true");
    const label = h("label", { for: id }, param.name,
      param.required ? h("span", { class: "required", text: " (required)" }) : null);
    return h("div", { class: "field" }, label, input,
      h("span", { class: "hint", id: hintId, text: hintFor(param, kind) }),
      h("p", { class: "field-error", id: `${id}-error`, hidden: true }));
  }

  function showFunction(name) {
    const fn = functions.get(name);
    // `name` in a docstring reads as code.
    functionDoc.replaceChildren(...fn.doc.split("`").map((part, index) => (index % 2 ? h("code", { text: part }) : part)));
    fields.replaceChildren(...fn.parameters
      .filter((param) => param.kind !== "var_positional" && param.kind !== "var_keyword")
      .map(fieldFor));
    queueSelect.value = fn.queue;
    timeoutInput.placeholder = String(fn.timeout);
    formStatus.textContent = "";
    formStatus.classList.remove("error");
  }

  function setFieldError(input, message) {
    const error = document.getElementById(`${input.id}-error`);
    if (message) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", `${input.id}-hint ${error.id}`);
      error.textContent = message;
      error.hidden = false;
    } else {
      input.removeAttribute("aria-invalid");
      input.setAttribute("aria-describedby", `${input.id}-hint`);
      error.textContent = "";
      error.hidden = true;
    }
  }

  // Convert a field's text to the JSON value its parameter takes; throw a message if it cannot be.
  function convert(kind, raw) {
    if (kind === "integer") {
      if (!/^-?\d+$/.test(raw.trim())) throw new Error("Enter a whole number.");
      return Number(raw);
    }
    if (kind === "number") {
      const value = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(value)) throw new Error("Enter a number.");
      return value;
    }
    if (kind === "boolean") return raw === "true";
    if (kind === "string") return raw;
    if (kind === "string-or-array" && !raw.trim().startsWith("[")) return raw;
    try {
      return JSON.parse(raw);
    } catch (error) {
      if (kind === "any") return raw;
      throw new Error("Enter valid JSON.");
    }
  }

  function readForm(fn) {
    const kwargs = {};
    const files = {};
    let firstInvalid = null;
    for (const param of fn.parameters) {
      const input = document.getElementById(`arg-${param.name}`);
      if (!input) continue;
      const kind = input.dataset.kind;
      let message = null;
      if (kind === "file") {
        if (input.files.length) files[param.name] = input.files[0];
        else if (param.required) message = "Choose a file.";
      } else if (input.value === "") {
        if (param.required) message = "This argument is required.";
      } else {
        try {
          kwargs[param.name] = convert(kind, input.value);
        } catch (error) {
          message = error.message;
        }
      }
      setFieldError(input, message);
      if (message && !firstInvalid) firstInvalid = input;
    }
    return { kwargs, files, firstInvalid };
  }

  function buildRequest(fn, kwargs, files) {
    const options = { queue: queueSelect.value };
    if (timeoutInput.value !== "") options.timeout = Number(timeoutInput.value);
    if (delayInput.value !== "") options.delay = Number(delayInput.value);
    if (Object.keys(files).length === 0) {
      return {
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ function: fn.name, kwargs, ...options }),
      };
    }
    // Uploads go as multipart: one field per argument, converted by the server to its type.
    const body = new FormData();
    body.append("function", fn.name);
    for (const [name, value] of Object.entries(options)) body.append(name, String(value));
    for (const [name, value] of Object.entries(kwargs)) {
      body.append(name, typeof value === "string" ? value : JSON.stringify(value));
    }
    for (const [name, file] of Object.entries(files)) body.append(name, file, file.name);
    return { headers: { Accept: "application/json" }, body };
  }

  async function submit(event) {
    event.preventDefault();
    const fn = functions.get(functionSelect.value);
    const { kwargs, files, firstInvalid } = readForm(fn);
    formStatus.classList.remove("error");
    if (firstInvalid) {
      formStatus.textContent = "Check the highlighted arguments.";
      formStatus.classList.add("error");
      firstInvalid.focus();
      return;
    }
    submitButton.disabled = true;
    formStatus.textContent = "Enqueuing…";
    try {
      const request = buildRequest(fn, kwargs, files);
      const response = await fetch(urls.enqueue, { method: "POST", ...request });
      if (response.status !== 202) {
        formStatus.textContent = await errorMessage(response);
        formStatus.classList.add("error");
        return;
      }
      const accepted = await response.json();
      submitted.add(accepted.job_id);
      formStatus.textContent = `Job ${accepted.job_id.slice(0, 8)} is ${accepted.status}.`;
      formStatus.dataset.jobId = accepted.job_id;
      live.refresh();
    } catch (error) {
      formStatus.textContent = `Could not reach the server: ${error.message}`;
      formStatus.classList.add("error");
    } finally {
      submitButton.disabled = false;
    }
  }

  for (const fn of settings.functions) {
    functionSelect.append(h("option", { value: fn.name, text: fn.name }));
  }
  for (const queue of settings.queues) queueSelect.append(h("option", { value: queue, text: queue }));
  timeoutInput.max = String(settings.max_timeout);
  delayInput.max = String(settings.max_delay);
  functionSelect.addEventListener("change", () => showFunction(functionSelect.value));
  form.addEventListener("submit", submit);
  if (settings.functions.length) showFunction(functionSelect.value);

  // --- The job table ------------------------------------------------------------------------

  const tbody = document.getElementById("jobs");
  const summary = document.getElementById("jobs-summary");
  const rows = new Map();

  function sortKey(job) {
    // Newest first; a deferred job has no time yet and goes on top.
    return job.enqueued_at || job.scheduled_for || "9999";
  }

  function timeLines(job) {
    const at = (value) => (value ? Date.parse(value) : null);
    const enqueued = at(job.enqueued_at);
    const started = at(job.started_at);
    const ended = at(job.ended_at);
    const now = serverNow();
    switch (job.status) {
      case "queued":
        return [`waiting ${seconds(now - enqueued)}`];
      case "started":
        return [enqueued ? `waited ${seconds(started - enqueued)}` : null, `running ${seconds(now - started)}`];
      case "scheduled": {
        const due = at(job.scheduled_for);
        return [due > now ? `starts in ${seconds(due - now)}` : "due now"];
      }
      case "deferred": {
        const count = (job.depends_on || []).length;
        return [`waits for ${count} job${count === 1 ? "" : "s"}`];
      }
      default:
        return [
          enqueued && started ? `waited ${seconds(started - enqueued)}` : null,
          started && ended ? `ran ${seconds(ended - started)}` : null,
        ];
    }
  }

  function renderTime(row, job) {
    const lines = timeLines(job).filter(Boolean);
    row.cells.time.replaceChildren(...lines.map((line) => h("span", { text: line })));
  }

  function renderProgress(row, job) {
    const progress = job.progress;
    if (!progress) {
      row.cells.progress.replaceChildren(h("span", { class: "muted", text: "—" }));
      return;
    }
    const percent = Math.round(Number(progress.percent) || 0);
    const label = `${percent} %${progress.message ? ` · ${progress.message}` : ""}`;
    row.cells.progress.replaceChildren(
      h("progress", { max: 100, value: percent, "aria-label": `Progress of job ${job.job_id}` }),
      h("span", { class: "progress-text", text: label }),
    );
  }

  async function loadResult(container, job) {
    try {
      const response = await fetch(job.result_url, { headers: { Accept: "application/json" } });
      if (!response.ok) {
        container.replaceChildren(h("p", { class: "error", text: await errorMessage(response) }));
        return;
      }
      const type = (response.headers.get("Content-Type") || "").split(";")[0].trim();
      if (type === "application/json") {
        const body = await response.json();
        container.replaceChildren(h("pre", { class: "result", text: JSON.stringify(body.result, null, 2) }));
      } else if (type.startsWith("image/")) {
        const image = URL.createObjectURL(await response.blob());
        container.replaceChildren(h("a", { href: job.result_url, target: "_blank", rel: "noopener" },
          h("img", { src: image, alt: `Image returned by job ${job.job_id.slice(0, 8)} (${type})` })));
      } else {
        container.replaceChildren(h("a", { href: job.result_url, target: "_blank", rel: "noopener",
          text: `Open the result (${type || "file"})` }));
      }
    } catch (error) {
      container.replaceChildren(h("p", { class: "error", text: `Could not load the result: ${error.message}` }));
    }
  }

  function tracebackDetails(job) {
    const pre = h("pre", { text: "Loading…" });
    const details = h("details", {}, h("summary", { text: "Traceback" }), pre);
    details.addEventListener("toggle", async () => {
      if (!details.open || details.dataset.loaded) return;
      details.dataset.loaded = "yes";
      try {
        const response = await fetch(job.status_url, { headers: { Accept: "application/json" } });
        const body = await response.json();
        pre.textContent = body.traceback || body.error || "No traceback was kept.";
      } catch (error) {
        pre.textContent = `Could not load the traceback: ${error.message}`;
      }
    });
    return details;
  }

  function renderOutcome(row, job) {
    // Rebuilt only when the job's outcome changes: an open <details> or a loaded image stays.
    const key = [job.status, job.ended_at, job.error, job.last_error, job.attempt].join("|");
    if (row.outcomeKey === key) return;
    row.outcomeKey = key;
    const cell = row.cells.outcome;
    if (job.status === "finished") {
      const container = h("div", {}, h("span", { class: "muted", text: "Loading the result…" }));
      cell.replaceChildren(container);
      loadResult(container, job);
    } else if (REQUEUEABLE.has(job.status)) {
      const label = { failed: "Failed", stopped: "Stopped", canceled: "Canceled" }[job.status];
      const parts = [h("p", { class: "error" }, h("strong", { text: `${label}: ` }), job.error || "")];
      if (settings.tracebacks && job.status === "failed") parts.push(tracebackDetails(job));
      cell.replaceChildren(...parts);
    } else if (job.last_error) {
      cell.replaceChildren(h("p", { class: "muted" }, `Try ${job.attempt}; the last one failed: `,
        h("span", { class: "error", text: job.last_error })));
    } else {
      cell.replaceChildren();
    }
  }

  async function act(button, template, job, verb) {
    button.disabled = true;
    const before = button.textContent;
    button.textContent = verb === "cancel" ? "Canceling…" : "Requeuing…";
    try {
      const response = await fetch(jobUrl(template, job.job_id), {
        method: "POST",
        headers: { Accept: "application/json" },
      });
      if (response.ok) {
        const body = await response.json();
        announce(`Job ${job.job_id.slice(0, 8)} is ${body.status}.`);
        live.refresh();
      } else {
        const message = await errorMessage(response);
        announce(message);
        formStatus.textContent = message;
        formStatus.classList.add("error");
      }
    } catch (error) {
      announce(`Could not reach the server: ${error.message}`);
    } finally {
      button.disabled = false;
      button.textContent = before;
    }
  }

  function renderActions(row, job) {
    if (row.actionsKey === job.status) return;
    row.actionsKey = job.status;
    const name = `job ${job.job_id.slice(0, 8)} (${job.function})`;
    const buttons = [];
    if (CANCELABLE.has(job.status)) {
      const button = h("button", { type: "button", class: "cancel", text: "Cancel", "aria-label": `Cancel ${name}` });
      button.addEventListener("click", () => act(button, urls.cancel, job, "cancel"));
      buttons.push(button);
    }
    if (REQUEUEABLE.has(job.status)) {
      const button = h("button", { type: "button", class: "requeue", text: "Requeue", "aria-label": `Requeue ${name}` });
      button.addEventListener("click", () => act(button, urls.requeue, job, "requeue"));
      buttons.push(button);
    }
    row.cells.actions.replaceChildren(...buttons);
  }

  function createRow(job) {
    const cells = {
      job: h("td", { class: "job" }),
      status: h("td", { class: "status" }),
      progress: h("td", { class: "progress" }),
      outcome: h("td", { class: "outcome" }),
      actions: h("td", { class: "actions" }),
    };
    const tr = h("tr", { "data-job-id": job.job_id }, ...Object.values(cells));
    // The clock lines sit under the status badge, updated on their own every second.
    cells.badge = h("div", { class: "badge-line" });
    cells.time = h("div", { class: "time" });
    cells.status.append(cells.badge, cells.time);
    cells.job.append(
      h("span", { class: "job-name", text: job.function || "?" }),
      h("span", { class: "job-id" }, h("a", { href: job.status_url, title: job.job_id, text: job.job_id.slice(0, 8) })),
      h("span", { class: "queue", text: ` · ${job.queue}` }),
    );
    if (submitted.has(job.job_id)) tr.classList.add("new");
    return { tr, cells, job: null };
  }

  function updateRow(row, job) {
    const previous = row.job;
    row.job = job;
    if (!previous || previous.status !== job.status || previous.attempt !== job.attempt) {
      const badge = h("span", { class: `badge ${job.status}`, text: job.status });
      const attempt = job.attempt > 1 ? h("span", { class: "attempt", text: `try ${job.attempt}` }) : null;
      row.cells.badge.replaceChildren(...[badge, attempt].filter(Boolean));
      if (previous && submitted.has(job.job_id) && ENDED.has(job.status)) {
        announce(`Job ${job.job_id.slice(0, 8)} (${job.function}) ${job.status}.`);
      }
    }
    renderProgress(row, job);
    renderTime(row, job);
    renderOutcome(row, job);
    renderActions(row, job);
  }

  function render(body) {
    const jobs = [...body.jobs].sort((a, b) => (sortKey(a) < sortKey(b) ? 1 : sortKey(a) > sortKey(b) ? -1 : 0));
    const seen = new Set();
    let position = 0;
    for (const job of jobs) {
      seen.add(job.job_id);
      let row = rows.get(job.job_id);
      if (!row) {
        row = createRow(job);
        rows.set(job.job_id, row);
      }
      updateRow(row, job);
      // Move a row only when it is out of place: moving a focused button would lose focus.
      if (tbody.children[position] !== row.tr) tbody.insertBefore(row.tr, tbody.children[position] || null);
      position += 1;
    }
    for (const [jobId, row] of rows) {
      if (!seen.has(jobId)) {
        row.tr.remove();
        rows.delete(jobId);
      }
    }
    const empty = tbody.querySelector("tr.empty-row");
    if (jobs.length === 0 && !empty) {
      tbody.append(h("tr", { class: "empty-row" }, h("td", { class: "empty", colspan: 5, text: "No jobs yet: run one with the form." })));
    } else if (jobs.length && empty) {
      empty.remove();
    }
    summary.textContent = body.total > jobs.length
      ? `Showing the ${jobs.length} newest of ${body.total} jobs.`
      : `${jobs.length} job${jobs.length === 1 ? "" : "s"}.`;
  }

  // Tick the running clocks once a second, without asking the server.
  window.setInterval(() => {
    for (const row of rows.values()) {
      if (row.job && !ENDED.has(row.job.status)) renderTime(row, row.job);
    }
  }, 1000);

  // --- Live updates: Server-Sent Events, else polling ---------------------------------------

  const liveStatus = document.getElementById("live");

  const live = {
    source: null,
    pollTimer: null,
    retryTimer: null,
    failures: 0,
    mode: null,

    query() {
      const params = new URLSearchParams({ per_page: String(settings.page_jobs) });
      const show = document.querySelector("input[name=show]:checked").value;
      if (show) params.set("status", show);
      return params.toString();
    },

    setMode(mode, text) {
      this.mode = mode;
      liveStatus.dataset.mode = mode;
      liveStatus.textContent = text;
    },

    start() {
      this.stop();
      if (document.hidden) {
        this.setMode("paused", "Paused while the page is hidden");
      } else if ("EventSource" in window) {
        this.stream();
      } else {
        this.poll();
      }
    },

    stop() {
      if (this.source) this.source.close();
      this.source = null;
      window.clearTimeout(this.pollTimer);
      window.clearTimeout(this.retryTimer);
    },

    stream() {
      const source = new EventSource(`${urls.events}?${this.query()}`);
      this.source = source;
      this.setMode("connecting", "Connecting…");
      source.addEventListener("jobs", (event) => {
        this.failures = 0;
        if (this.mode !== "live") this.setMode("live", "Live");
        render(JSON.parse(event.data));
      });
      source.addEventListener("unavailable", () => {
        this.setMode("error", "The job store is unreachable; retrying…");
      });
      source.addEventListener("error", () => {
        // A stream ends after a minute and EventSource reconnects by itself; only repeated
        // failures without a single update mean streaming does not work here.
        this.failures += 1;
        if (this.failures >= 3 || source.readyState === EventSource.CLOSED) {
          source.close();
          this.source = null;
          this.poll();
          // Try streaming again later: the proxy or the server may have recovered.
          this.retryTimer = window.setTimeout(() => { this.failures = 0; this.start(); }, STREAM_RETRY_MS);
        } else if (this.failures > 1 && this.mode !== "error") {
          this.setMode("connecting", "Reconnecting…");
        }
      });
    },

    async poll() {
      window.clearTimeout(this.pollTimer);
      if (this.mode !== "polling") this.setMode("polling", `Updating every ${POLL_MS / 1000} s`);
      try {
        const response = await fetch(`${urls.jobs}?${this.query()}`, { headers: { Accept: "application/json" } });
        if (response.ok) render(await response.json());
        else this.setMode("error", await errorMessage(response));
      } catch (error) {
        this.setMode("error", "The server is unreachable; retrying…");
      }
      if (!this.source && !document.hidden) this.pollTimer = window.setTimeout(() => this.poll(), POLL_MS);
    },

    // After a submit or an action: the stream shows it within a moment; polling looks now.
    refresh() {
      if (!this.source) this.poll();
    },
  };

  document.querySelectorAll("input[name=show]").forEach((radio) => {
    radio.addEventListener("change", () => {
      rows.forEach((row) => row.tr.remove());
      rows.clear();
      live.start();
    });
  });
  document.addEventListener("visibilitychange", () => live.start());
  live.start();
}());
