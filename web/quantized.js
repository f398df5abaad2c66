// comfyui-quantized front end: marks each mm_type / quant_scheme / attention entry with what runs on this
// machine (from GET /quantized/capabilities) and shows the Sample node's speed after a run.
// Widget values stay the bare names (only the displayed label changes), so workflows stay valid.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const TABLES = ["mm_type", "quant_scheme", "attention"];
const STATS_WIDGET = "last run";
let report = null;

/** The short status text of one name, e.g. "native", "emulated on sm90", "needs vllm". */
function statusText(entry) {
  if (!entry) return "";
  if (entry.status === "native") return entry.reason === "unquantized" ? "unquantized" : "native";
  if (entry.status === "emulated") {
    const cc = report.compute_capability;
    return `emulated on ${cc ? "sm" + cc.replace(".", "") : "CPU"}`;
  }
  const reason = entry.reason || "unavailable";
  const missing = reason.match(/^(\S+) is not installed/);
  return missing ? `needs ${missing[1]}` : reason.split(",")[0];
}

/** Dropdown label of a value: "fp8-triton · native"; the bare value until the report arrives. */
function labelFor(table, value) {
  const text = report && value != null ? statusText(report[table]?.[value]) : "";
  return text ? `${value} · ${text}` : value ?? "";
}

function markWidgets(node) {
  for (const widget of node.widgets ?? []) {
    if (TABLES.includes(widget.name)) {
      widget.options.getOptionLabel = (value) => labelFor(widget.name, value);
    }
  }
}

/** "12.3 s/step · peak VRAM 10.2 GiB · kernels: triton" (on a CPU: "· CPU ·") from the Sample node's ui output. */
function statsText(ui) {
  const first = (key) => (Array.isArray(ui?.[key]) ? ui[key][0] : ui?.[key]);
  const parts = [];
  const sps = first("seconds_per_step");
  if (sps != null) parts.push(`${Number(sps).toFixed(2)} s/step`);
  const vram = first("peak_vram_gb");
  const device = first("device");
  if (vram != null) parts.push(`peak VRAM ${Number(vram).toFixed(2)} GiB`);
  else if (device) parts.push(String(device).toUpperCase()); // no VRAM figure off CUDA: say where it ran
  const kernels = ui?.kernels;
  if (kernels?.length) parts.push(`kernels: ${[].concat(kernels).join(", ")}`);
  const attention = ui?.attention;
  if (attention?.length) parts.push(`attention: ${[].concat(attention).join(", ")}`);
  return parts.join(" · ");
}

function showStats(node, ui) {
  const text = statsText(ui);
  if (!text) return;
  let widget = node.widgets?.find((w) => w.name === STATS_WIDGET);
  if (!widget) {
    widget = node.addWidget("text", STATS_WIDGET, "", () => {}, { serialize: false });
    widget.serialize = false;
  }
  widget.value = text;
  const wanted = Math.min(720, 80 + 7 * (STATS_WIDGET.length + text.length));
  if (node.size[0] < wanted) node.setSize([wanted, node.size[1]]);
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "comfyui-quantized.capabilities",
  async setup() {
    try {
      const response = await api.fetchApi("/quantized/capabilities");
      if (response.ok) report = await response.json();
    } catch (error) {
      console.warn("comfyui-quantized: no capability report", error);
    }
    app.graph?.setDirtyCanvas(true, true);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData.category ?? "").startsWith("quantized")) return;
    const inputs = { ...nodeData.input?.required, ...nodeData.input?.optional };
    if (TABLES.some((name) => name in inputs)) {
      const created = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = created?.apply(this, arguments);
        markWidgets(this);
        return result;
      };
    }
    if (/sample/i.test(nodeData.name)) {
      const executed = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (ui) {
        executed?.apply(this, arguments);
        showStats(this, ui);
      };
    }
  },
});
