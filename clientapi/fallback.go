package clientapi

import (
	"embed"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// loginFallback is the login fallback page (Client-Server API, "Login
// Fallback"): static HTML, a script and a style sheet.
//
//go:embed static/login
var loginFallback embed.FS

// loginFallbackCSP lets the page load only its own script and style sheet
// and call only this server; nothing may frame it (clickjacking) and its
// form posts nowhere (the script sends the login).
const loginFallbackCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// fallbackRoutes serve GET /_matrix/static/client/login/ and its assets.
func (a *API) fallbackRoutes(r chi.Router) {
	const base = "/_matrix/static/client/login"
	page := staticFile("static/login/index.html", "text/html; charset=utf-8")
	r.Get(base, page)
	r.Get(base+"/", page)
	r.Get(base+"/login.js", staticFile("static/login/login.js", "text/javascript; charset=utf-8"))
	r.Get(base+"/login.css", staticFile("static/login/login.css", "text/css; charset=utf-8"))
}

func staticFile(name, contentType string) http.HandlerFunc {
	body, err := loginFallback.ReadFile(name)
	if err != nil {
		// The files are embedded at build time.
		panic("clientapi: missing embedded " + name)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/static/client/login" {
			// Relative asset URLs need the trailing slash.
			http.Redirect(w, r, r.URL.Path+"/"+queryOf(r), http.StatusFound)
			return
		}
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Content-Security-Policy", loginFallbackCSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	}
}

func queryOf(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return "?" + r.URL.RawQuery
}
