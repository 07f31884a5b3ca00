package mxhttp

import (
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"
)

// PathParam returns a path parameter percent-decoded. chi matches on the
// raw path whenever it holds escapes that differ from the default encoding
// (such as "%40alice%3Aexample.org"), and then hands the parameters out
// undecoded.
func PathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v
	}
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v // net/http has already rejected invalid escapes
}
