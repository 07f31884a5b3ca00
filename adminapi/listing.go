package adminapi

import (
	"net/http"
	"slices"
	"strconv"

	"homeserver/mxhttp"
)

// offsetPage is Synapse's offset pagination of admin lists: from (an
// offset, default 0) and limit (default 100).
type offsetPage struct{ from, limit int }

// readOffsetPage reads from and limit; negative or non-numeric values are
// 400 M_INVALID_PARAM, as in Synapse.
func readOffsetPage(r *http.Request) (offsetPage, error) {
	p := offsetPage{limit: 100}
	for _, f := range []struct {
		name string
		v    *int
	}{{"from", &p.from}, {"limit", &p.limit}} {
		s := r.URL.Query().Get(f.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return p, mxhttp.InvalidParam("Query parameter %s must be a string representing a positive integer.", f.name)
		}
		*f.v = n
	}
	return p, nil
}

// next returns the from of the page after one of n rows out of total,
// and whether there is one.
func (p offsetPage) next(n, total int) (int, bool) {
	end := p.from + n
	return end, n > 0 && end < total
}

// readDirection reads dir: "f" (forwards) or "b" (backwards); it returns
// whether the order is reversed.
func readDirection(r *http.Request, def string) (bool, error) {
	d := r.URL.Query().Get("dir")
	if d == "" {
		d = def
	}
	switch d {
	case "f":
		return false, nil
	case "b":
		return true, nil
	}
	return false, mxhttp.InvalidParam("Unknown direction: %s", d)
}

// readOrderBy reads order_by, one of allowed, def when absent.
func readOrderBy(r *http.Request, def string, allowed []string) (string, error) {
	o := r.URL.Query().Get("order_by")
	if o == "" {
		return def, nil
	}
	if !slices.Contains(allowed, o) {
		return "", mxhttp.InvalidParam("Unknown value for order_by: %s", o)
	}
	return o, nil
}

// readNonNegative reads a query parameter holding a non-negative integer
// (a time in ms, a size); ok is false when it is absent.
func readNonNegative(r *http.Request, name string) (v int64, ok bool, err error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, false, mxhttp.InvalidParam("Query parameter %s must be a string representing a positive integer.", name)
	}
	return n, true, nil
}
