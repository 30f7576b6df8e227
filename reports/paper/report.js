import init, { Viewer } from "./viewer.js";
// The report's explorer: loads the bundle into the WebAssembly viewer and
// redraws the figures for the reader's selection. The static figures above
// never depend on this script; the explorer stays hidden until it works.

function decodeBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`could not load ${url} (HTTP ${response.status}).`);
  return new Uint8Array(await response.arrayBuffer());
}

function errorText(error) {
  const text = error && error.message ? error.message : String(error);
  return text.endsWith(".") ? text : text + ".";
}

// Counts and layer numbers as integers, measures with three decimals,
// fractions (format "percent") as whole percentages.
function formatNumber(value, format) {
  if (value === null || value === undefined) return "n/a";
  if (typeof value !== "number") return String(value);
  if (!Number.isFinite(value)) return "n/a";
  if (format === "percent") return `${(100 * value).toFixed(0)}%`.replace("-", "−");
  return Number.isInteger(value) ? String(value) : value.toFixed(3);
}

// `numbers["patching"]["replace"]` for the name "patching.replace".
function lookUp(numbers, name) {
  return name.split(".").reduce((value, key) => (value === null || value === undefined ? value : value[key]), numbers);
}

function option(value, label) {
  const element = document.createElement("option");
  element.value = String(value);
  element.textContent = label;
  return element;
}

function fillSelect(select, items) {
  select.replaceChildren(...items.map(([value, label]) => option(value, label)));
}

async function start({ init, Viewer, wasmBytes, bundleBytes, wasmUrl, bundleUrl }) {
  const status = document.getElementById("viewer-status");
  const explorer = document.getElementById("explorer");
  let viewer;
  try {
    if (location.protocol === "file:" && !wasmBytes) {
      throw new Error("this page was opened from a file, and browsers do not let such a page load the viewer's files. Serve the folder (for example `python3 -m http.server`) or use the single-file report (`engine report --single-file`)");
    }
    await init(wasmBytes || (await fetchBytes(wasmUrl)));
    viewer = new Viewer(bundleBytes || (await fetchBytes(bundleUrl)));
  } catch (error) {
    status.textContent = `The interactive explorer could not start: ${errorText(error)} The static figures and tables above are complete.`;
    status.classList.add("error");
    document.body.dataset.viewer = "error";
    return;
  }
  const manifest = JSON.parse(viewer.manifest_json());
  const controls = {};
  for (const name of ["model", "task", "layer", "head", "hypothesis", "comparator", "measure", "patching"]) {
    const control = document.getElementById(`control-${name}`);
    // The patching control is on the page only when some task was patched.
    if (control) controls[name] = control;
  }
  const conditionBox = document.getElementById("control-conditions");

  function fillDependent(selection) {
    const model = manifest.models[selection.model];
    const task = manifest.tasks[selection.task];
    fillSelect(controls.layer, model.layers.map((layer, i) => [i, `layer ${layer}`]));
    fillSelect(controls.head, [["mean", "mean over heads"], ...Array.from({ length: model.n_head }, (_, h) => [h, `head ${h}`])]);
    fillSelect(controls.hypothesis, task.hypotheses.map((name, i) => [i, name]));
    fillSelect(controls.measure, task.measures.map((name, i) => [i, name]));
    controls.measure.disabled = task.measures.length === 0;
    if (controls.patching) {
      const labels = viewer.patching_measure_labels(selection.task);
      fillSelect(controls.patching, labels.length ? labels.map((name, i) => [i, name]) : [[selection.patching_measure, "not patched"]]);
      controls.patching.disabled = labels.length === 0;
    }
    controls.head.disabled = !task.attention;
    conditionBox.replaceChildren(...task.conditions.map((name, i) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = String(i);
      box.checked = selection.conditions.length === 0 || selection.conditions.includes(i);
      box.addEventListener("change", onChange);
      label.append(box, " " + name);
      return label;
    }));
  }

  function setControls(selection) {
    fillDependent(selection);
    controls.model.value = String(selection.model);
    controls.task.value = String(selection.task);
    controls.layer.value = String(selection.layer);
    controls.head.value = selection.head === null ? "mean" : String(selection.head);
    controls.hypothesis.value = String(selection.hypothesis);
    controls.comparator.value = String(selection.comparator);
    controls.measure.value = String(selection.measure);
    if (controls.patching) controls.patching.value = String(selection.patching_measure);
  }

  function readControls() {
    const boxes = [...conditionBox.querySelectorAll("input")];
    const checked = boxes.filter((b) => b.checked).map((b) => b.value);
    const conditions = checked.length === boxes.length || checked.length === 0 ? "all" : checked.join(",");
    return [
      `model=${controls.model.value}`, `task=${controls.task.value}`, `layer=${controls.layer.value}`,
      `head=${controls.head.value}`, `hypothesis=${controls.hypothesis.value}`,
      `comparator=${controls.comparator.value}`, `measure=${controls.measure.value}`,
      `conditions=${conditions}`,
      ...(controls.patching ? [`patching=${controls.patching.value}`] : []),
    ].join("&");
  }

  function showNumbers(numbers) {
    for (const element of document.querySelectorAll("[data-number]")) {
      const value = lookUp(numbers, element.dataset.number);
      element.textContent = formatNumber(value, element.dataset.format);
    }
    for (const element of document.querySelectorAll("[data-needs]")) {
      element.hidden = numbers[element.dataset.needs] === null || numbers[element.dataset.needs] === undefined;
    }
  }

  function redraw() {
    const started = performance.now();
    let result;
    try {
      result = JSON.parse(viewer.draw("canvas-"));
    } catch (error) {
      status.textContent = `The explorer could not draw this selection: ${errorText(error)}`;
      status.classList.add("error");
      return;
    }
    const milliseconds = performance.now() - started;
    explorer.dataset.redrawMs = milliseconds.toFixed(2);
    explorer.dataset.redraws = String(Number(explorer.dataset.redraws || "0") + 1);
    for (const figure of explorer.querySelectorAll("figure[data-figure]")) {
      figure.hidden = !result.figures.includes(figure.dataset.figure);
    }
    showNumbers(result.numbers);
    status.textContent = "";
    status.classList.remove("error");
  }

  function apply(fragment, dependentsChanged) {
    const complete = viewer.set_fragment(fragment);
    const selection = JSON.parse(viewer.selection_json());
    if (dependentsChanged) setControls(selection);
    if (location.hash.slice(1) !== complete) history.replaceState(null, "", "#" + complete);
    redraw();
  }

  function onChange(event) {
    const dependents = event && (event.target === controls.model || event.target === controls.task);
    let fragment = readControls();
    if (dependents) fragment = fragment.replace(/&conditions=[^&]*/, "&conditions=all");
    apply(fragment, dependents);
  }

  document.getElementById("controls").addEventListener("submit", (event) => event.preventDefault());
  fillSelect(controls.model, manifest.models.map((m, i) => [i, m.name]));
  fillSelect(controls.task, manifest.tasks.map((t, i) => [i, t.name]));
  fillSelect(controls.comparator, manifest.comparators.map((c, i) => [i, c]));
  for (const control of Object.values(controls)) control.addEventListener("change", onChange);
  window.addEventListener("hashchange", () => apply(location.hash.slice(1), true));

  explorer.hidden = false;
  status.textContent = "";
  apply(location.hash.slice(1), true);
  document.body.dataset.viewer = "ready";
}

start({ init: (bytes) => init({ module_or_path: bytes }), Viewer, wasmUrl: "viewer_bg.wasm", bundleUrl: "bundle.safetensors.zst" });
