// The HTTP API under /api/v1, reached with the access cookie the token URL set (same origin only).
// Every failure becomes an ApiError whose message is a sentence for people: the service's problem+json
// `detail`, or a translated text when the answer is not one; never the raw answer.

import { t } from "./dom.js";

/// A failed request: `message` in words, and the problem's `code`, `file`, `field` and HTTP `status`.
export class ApiError extends Error {
  constructor(message, { status = 0, code = "", file = null, field = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.file = file;
    this.field = field;
  }
}

/// Listeners told when the service answers 401 (the page is no longer signed in).
const unauthorizedListeners = [];
export function onUnauthorized(listener) {
  unauthorizedListeners.push(listener);
}

/// Sends a request; `body` (an object) goes as JSON. Returns the parsed JSON answer (or null for 204).
export async function request(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}`, options);
  } catch {
    throw new ApiError(t("error.network"));
  }
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  let data = null;
  if (type.includes("json")) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (response.ok && data !== null) return data;
  if (response.status === 401) for (const listener of unauthorizedListeners) listener();
  if (data && typeof data.detail === "string") {
    throw new ApiError(data.detail, { status: response.status, code: data.code, file: data.file, field: data.field });
  }
  throw new ApiError(response.status === 401 ? t("error.unauthorized") : t("error.unexpected", { status: response.status }),
                     { status: response.status });
}

export const api = {
  status: () => request("GET", "/status"),
  formats: () => request("GET", "/formats"),
  list: (path) => request("GET", path ? `/files?path=${encodeURIComponent(path)}` : "/files"),
  inspect: (path, parents = []) => request("POST", "/inspect", parents.length > 0 ? { path, parents } : { path }),
  measure: (body) => request("POST", "/measure", body),
  submit: (job) => request("POST", "/jobs", job),
  jobs: (limit, before) => request("GET", `/jobs?limit=${limit}${before ? `&before=${before}` : ""}`),
  job: (id) => request("GET", `/jobs/${id}`),
  cancel: (id) => request("DELETE", `/jobs/${id}`),
  resume: (id, credentials) => request("POST", `/jobs/${id}/resume`, credentials),
  retry: (id, credentials) => request("POST", `/jobs/${id}/retry`, credentials),
  probeHost: (host, port) => request("POST", "/hosts/probe", { host, port }),
  trustHost: (host, port, fingerprint) => request("POST", "/hosts/trust", { host, port, fingerprint }),
  /// The address of a text file's content (the domain XML), shown or downloaded by the browser.
  contentURL: (path, download) => `/api/v1/files/content?path=${encodeURIComponent(path)}${download ? "&download=1" : ""}`,
  /// The address of a job's event stream.
  eventsURL: (id) => `/api/v1/jobs/${id}/events`,
};
