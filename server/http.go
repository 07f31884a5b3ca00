package server

import (
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"homeserver/clientapi"
	"homeserver/config"
	"homeserver/federation/transport"
	"homeserver/metrics"
	"homeserver/mxhttp"
)

// Handler builds the HTTP handler of one listener from its resources.
func (s *Server) Handler(lc config.Listener) http.Handler {
	r := chi.NewRouter()
	r.Use(jsonErrors, bodyDeadline(s.timeouts), s.recoverer, clientIPMiddleware(lc.XForwarded), cors, s.requestLog, s.http.Middleware)
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		mxhttp.WriteError(w, mxhttp.Unrecognized("Unrecognized request"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		// RFC 9110 asks a 405 to list the methods the resource allows.
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete} {
			if r.Match(chi.NewRouteContext(), m, req.URL.Path) {
				allowed = append(allowed, m)
			}
		}
		w.Header().Set("Allow", strings.Join(append(allowed, http.MethodOptions), ", "))
		mxhttp.WriteError(w, mxhttp.MethodNotAllowed())
	})
	names := resourceNames(lc)
	if lc.Type == "metrics" || slices.Contains(names, "metrics") {
		h := metrics.Handler(s.registry)
		r.Handle("/_synapse/metrics", h)
		r.Handle("/metrics", h)
	}
	if lc.Type == "metrics" {
		return r
	}
	if slices.Contains(names, "client") {
		s.client.Mount(r)
		s.media.MountClient(r)
	}
	if slices.Contains(names, "media") {
		s.media.MountMedia(r)
		if s.cfg.EnableIdenticons {
			s.media.MountIdenticons(r)
		}
	}
	if slices.Contains(names, "federation") {
		s.fed.service.Mount(r)
		s.media.MountFederation(r, transport.Middleware(s.cfg.ServerName, s.fed.keys.Lookup, 0))
	} else if slices.Contains(names, "openid") {
		s.fed.service.MountOpenID(r)
	}
	if slices.Contains(names, "federation") || slices.Contains(names, "keys") {
		s.fed.keys.Mount(r)
	}
	if s.cfg.ServeServerWellknown && slices.Contains(names, "client") {
		r.Get("/.well-known/matrix/server", s.serverWellKnown)
	}
	if slices.Contains(names, "health") || slices.Contains(names, "client") {
		r.Get("/health", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte("OK"))
		})
	}
	return r
}

// recoverer turns a panic into a logged 500 with a Matrix error body, so that
// a bug in one handler never takes the server down.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
				mxhttp.WriteError(w, mxhttp.Internal())
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// clientIPMiddleware records the client address; behind a reverse proxy
// (x_forwarded: true) it is the last X-Forwarded-For hop: the one the
// trusted proxy appended. Earlier hops are whatever the client wrote.
func clientIPMiddleware(xForwarded bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ip, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				ip = r.RemoteAddr
			}
			if xForwarded {
				if hop := lastForwardedHop(r.Header.Values("X-Forwarded-For")); hop != "" {
					ip = hop
				}
			}
			next.ServeHTTP(w, r.WithContext(clientapi.WithClientIP(r.Context(), ip)))
		})
	}
}

// lastForwardedHop returns the rightmost address of the X-Forwarded-For
// header lines, which a proxy may append as a new line or to the last one.
func lastForwardedHop(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	last := lines[len(lines)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	return strings.TrimSpace(last)
}

// cors adds the headers the spec recommends to every response and answers
// pre-flight OPTIONS requests without running any endpoint logic.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization, Date")
		h.Set("Access-Control-Expose-Headers", "Retry-After")
		if r.Method == http.MethodOptions {
			mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) requestLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		next.ServeHTTP(w, r)
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "duration", time.Since(start))
	})
}
