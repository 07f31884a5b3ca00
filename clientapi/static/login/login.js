// The login fallback (Client-Server API, "Login Fallback"): logs in with a
// password through POST /_matrix/client/v3/login and hands the response to
// window.matrixLogin.onLogin, which the client embedding this page defines.
// The credentials go nowhere else: no redirect and no postMessage, which
// would hand the access token to whatever page opened this one.
"use strict";

(function () {
  var loginURL = "/_matrix/client/v3/login";
  // Non-credential /login parameters the page forwards from its query
  // string (spec v1.1).
  var forwarded = ["device_id", "initial_device_display_name"];

  var form = document.getElementById("login-form");
  var message = document.getElementById("message");
  var button = document.getElementById("submit");

  function show(text, isError) {
    message.textContent = text;
    message.className = isError ? "error" : "";
  }

  function request(method, body) {
    return fetch(loginURL, {
      method: method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
      credentials: "omit",
      cache: "no-store"
    }).then(function (resp) {
      return resp.json().then(function (json) {
        return { ok: resp.ok, json: json };
      });
    });
  }

  // The page can only log in with a password.
  request("GET").then(function (r) {
    var flows = (r.json && r.json.flows) || [];
    var password = flows.some(function (f) { return f.type === "m.login.password"; });
    if (!password) {
      form.hidden = true;
      show("This server does not offer password login.", true);
    }
  }).catch(function () {
    show("Cannot reach the server.", true);
  });

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: document.getElementById("user").value },
      password: document.getElementById("password").value
    };
    var params = new URLSearchParams(window.location.search);
    forwarded.forEach(function (k) {
      if (params.has(k)) {
        body[k] = params.get(k);
      }
    });
    if (params.get("refresh_token") === "true") {
      body.refresh_token = true;
    }
    button.disabled = true;
    show("Logging in\u2026", false);
    request("POST", body).then(function (r) {
      button.disabled = false;
      if (!r.ok) {
        show((r.json && r.json.error) || "Login failed.", true);
        return;
      }
      document.getElementById("password").value = "";
      form.hidden = true;
      if (window.matrixLogin && typeof window.matrixLogin.onLogin === "function") {
        window.matrixLogin.onLogin(r.json);
        show("Logged in.", false);
      } else {
        show("Logged in. You may close this page and return to your client.", false);
      }
    }).catch(function () {
      button.disabled = false;
      show("Cannot reach the server.", true);
    });
  });
})();
