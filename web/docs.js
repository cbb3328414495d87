// The API page: fetches /openapi.json and renders every path, method, parameter, request body
// and response with its schema as plain HTML. No framework, no CDN, no build step.
"use strict";

const $ = (id) => document.getElementById(id);

/** Escapes text for HTML, then turns `code` spans into <code>. */
function text(s) {
  const escaped = String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  return escaped.replace(/`([^`]+)`/g, "<code>$1</code>");
}

/** `#/components/<kind>/<name>` → the object it names. */
function resolve(doc, value) {
  if (!value || typeof value.$ref !== "string") return value;
  return value.$ref.slice(2).split("/").reduce((node, key) => node && node[key], doc);
}

const refName = (ref) => ref.split("/").pop();
const schemaLink = (ref) => `<a class="type" href="#schema-${text(refName(ref))}">${text(refName(ref))}</a>`;

/** A schema as HTML: its type on one line, then its fields as a nested list. */
function schemaHtml(doc, schema, depth = 0) {
  if (!schema || typeof schema !== "object") return "";
  if (schema.$ref) return schemaLink(schema.$ref);
  const parts = [];
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    if (Array.isArray(schema[key])) {
      const word = { anyOf: " or ", oneOf: " or ", allOf: " and " }[key];
      parts.push(schema[key].map((s) => schemaHtml(doc, s, depth + 1)).join(word));
    }
  }
  if ("const" in schema) parts.push(`<code>${text(JSON.stringify(schema.const))}</code>`);
  if (schema.enum) parts.push("one of " + schema.enum.map((v) => `<code>${text(JSON.stringify(v))}</code>`).join(", "));
  if (schema.type) {
    const types = [].concat(schema.type).join(" | ");
    let type = `<span class="type">${text(types)}</span>`;
    if (schema.type === "array" || [].concat(schema.type).includes("array")) {
      if (schema.items) type = `<span class="type">array of</span> ${schemaHtml(doc, schema.items, depth + 1)}`;
    }
    parts.unshift(type);
  }
  const facts = [];
  if (schema.format) facts.push(schema.format);
  if (schema.pattern) facts.push(`pattern <code>${text(schema.pattern)}</code>`);
  if (schema.contentMediaType) facts.push(`bytes, <code>${text(schema.contentMediaType)}</code>`);
  if (schema.minimum !== undefined) facts.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) facts.push(`≤ ${schema.maximum}`);
  if (schema.default !== undefined) facts.push(`default <code>${text(JSON.stringify(schema.default))}</code>`);
  let html = parts.join(" ") + (facts.length ? ` <span class="muted">(${facts.join(", ")})</span>` : "");
  if (schema.properties && depth < 6) {
    const required = new Set(schema.required || []);
    const rows = Object.entries(schema.properties).map(([name, prop]) => {
      const mark = required.has(name) ? ' <span class="req" title="required">*</span>' : "";
      const description = prop && prop.description ? ` — ${text(prop.description)}` : "";
      return `<li><code>${text(name)}</code>${mark}: ${schemaHtml(doc, prop, depth + 1)}${description}</li>`;
    });
    html += `<ul class="fields">${rows.join("")}</ul>`;
  }
  return html;
}

function contentHtml(doc, content) {
  if (!content) return "";
  return Object.entries(content)
    .map(([type, media]) => `<div><code>${text(type)}</code>${media.schema ? ": " + schemaHtml(doc, media.schema) : ""}</div>`)
    .join("");
}

function parametersHtml(doc, parameters) {
  if (!parameters || !parameters.length) return "";
  const rows = parameters.map((p) => {
    p = resolve(doc, p);
    const mark = p.required ? ' <span class="req" title="required">*</span>' : "";
    return `<tr><td><code>${text(p.name)}</code>${mark}</td><td>${text(p.in)}</td><td>${schemaHtml(doc, p.schema)}</td><td>${text(p.description)}</td></tr>`;
  });
  return `<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>what</th></tr>${rows.join("")}</table>`;
}

function responsesHtml(doc, responses) {
  const rows = Object.entries(responses || {}).map(([status, response]) => {
    response = resolve(doc, response) || {};
    const headers = Object.entries(response.headers || {})
      .map(([name, h]) => `<div>Header <code>${text(name)}</code>: ${text(resolve(doc, h).description)}</div>`)
      .join("");
    return `<tr><td><strong>${text(status)}</strong></td><td>${text(response.description)}${headers}</td><td>${contentHtml(doc, response.content)}</td></tr>`;
  });
  return `<h4>Responses</h4><table><tr><th>status</th><th>when</th><th>body</th></tr>${rows.join("")}</table>`;
}

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"];

function render(doc) {
  document.title = `${doc.info.title} · API`;
  $("title").textContent = `${doc.info.title} API ${doc.info.version}`;
  $("summary").innerHTML = text(doc.info.summary);
  $("description").innerHTML = text(doc.info.description);
  const toc = [];
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS.filter((m) => item[m])) {
      const op = item[method];
      const id = `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, "-")}`;
      const title = `<span class="method ${method}">${method}</span> <span class="path">${text(path)}</span>`;
      toc.push(`<li><a href="#${id}">${title}</a> ${text(op.summary)}</li>`);
      const body = op.requestBody ? resolve(doc, op.requestBody) : null;
      const security = (op.security || []).map((s) => Object.keys(s).map((name) => text(resolve(doc, doc.components.securitySchemes[name]).description)).join(", "));
      ops.push(`<article class="panel op" id="${id}">
        <h3>${title} <span>${text(op.summary)}</span></h3>
        ${op.description ? `<p>${text(op.description)}</p>` : ""}
        ${security.length ? `<p><strong>Authorization:</strong> <code>Bearer</code> token: ${security.join("; ")}</p>` : ""}
        ${parametersHtml(doc, [...(item.parameters || []), ...(op.parameters || [])])}
        ${body ? `<h4>Request body${body.required ? ' <span class="req">*</span>' : ""}</h4><p>${text(body.description)}</p>${contentHtml(doc, body.content)}` : ""}
        ${responsesHtml(doc, op.responses)}
      </article>`);
    }
  }
  $("toc").innerHTML = toc.join("");
  $("operations").innerHTML = ops.join("");
  $("schemas").innerHTML = Object.entries(doc.components.schemas || {})
    .map(([name, schema]) => `<article class="panel schema" id="schema-${text(name)}">
        <h3><span class="type">${text(name)}</span></h3>
        ${schema.description ? `<p>${text(schema.description)}</p>` : ""}
        ${schemaHtml(doc, schema)}
      </article>`)
    .join("");
  if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
}

fetch("openapi.json", { headers: { accept: "application/json" } })
  .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`GET /openapi.json: ${r.status}`))))
  .then(render)
  .catch((e) => {
    $("summary").innerHTML = `<span class="error">${text(e.message)}</span>`;
  });
