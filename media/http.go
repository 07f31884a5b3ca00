package media

import (
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
	"homeserver/ratelimit"
)

// HTTPConfig wires the media endpoints to the client API's authentication.
type HTTPConfig struct {
	// Auth is the access-token middleware of the client API; UserID returns
	// the user it authenticated.
	Auth   func(http.Handler) http.Handler
	UserID func(*http.Request) string
	// Requester names who sends a request (user, client address or
	// server) for the rate limit of thumbnail generation.
	Requester func(*http.Request) string
	// RcCreate limits POST /_matrix/media/v1/create per user.
	RcCreatePerSecond float64
	RcCreateBurst     int
	Logger            *slog.Logger
}

// HTTP serves the content repository's endpoints. Handlers are thin: they
// parse the request and call Service.
type HTTP struct {
	svc      *Service
	cfg      HTTPConfig
	rcCreate *ratelimit.Limiter
	log      *slog.Logger
}

// NewHTTP returns the handlers over svc.
func NewHTTP(svc *Service, cfg HTTPConfig) *HTTP {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Requester == nil {
		cfg.Requester = func(r *http.Request) string {
			if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
				return host
			}
			return r.RemoteAddr
		}
	}
	return &HTTP{svc: svc, cfg: cfg, rcCreate: ratelimit.New(cfg.RcCreatePerSecond, cfg.RcCreateBurst), log: cfg.Logger}
}

// MountMedia registers the /_matrix/media endpoints (the "media" listener
// resource): uploads, and the legacy unauthenticated downloads, which
// serve no media stored with enable_authenticated_media on.
func (h *HTTP) MountMedia(r chi.Router) {
	download, thumbnail := h.download(true), h.thumbnail(true)
	for _, v := range []string{"v3", "r0", "v1"} {
		r.Route("/_matrix/media/"+v, func(r chi.Router) {
			r.Get("/download/{serverName}/{mediaId}", download)
			r.Get("/download/{serverName}/{mediaId}/{fileName}", download)
			r.Get("/thumbnail/{serverName}/{mediaId}", thumbnail)
			r.Group(func(r chi.Router) {
				r.Use(h.cfg.Auth)
				r.Post("/upload", h.upload)
				r.Put("/upload/{serverName}/{mediaId}", h.uploadTo)
				r.Get("/config", h.config)
				if h.svc.prev != nil {
					r.Get("/preview_url", h.previewURL)
				}
				if v == "v1" {
					r.Post("/create", h.create)
				}
			})
		})
	}
}

// MountClient registers the authenticated /_matrix/client/v1/media
// endpoints (the "client" listener resource).
func (h *HTTP) MountClient(r chi.Router) {
	r.Route("/_matrix/client/v1/media", func(r chi.Router) {
		r.Use(h.cfg.Auth)
		download, thumbnail := h.download(false), h.thumbnail(false)
		r.Get("/download/{serverName}/{mediaId}", download)
		r.Get("/download/{serverName}/{mediaId}/{fileName}", download)
		r.Get("/thumbnail/{serverName}/{mediaId}", thumbnail)
		r.Get("/config", h.config)
		// Like Synapse, the endpoint exists only when previews are on;
		// otherwise the router answers 404 M_UNRECOGNIZED.
		if h.svc.prev != nil {
			r.Get("/preview_url", h.previewURL)
		}
	})
}

// Close stops the service's background thumbnail making (see
// Service.Close); the server calls it once its listeners are shut.
func (h *HTTP) Close() { h.svc.Close() }

// Service is the media repository behind the handlers (for the admin API).
func (h *HTTP) Service() *Service { return h.svc }

func (h *HTTP) fail(w http.ResponseWriter, r *http.Request, err error) { mxhttp.Fail(w, r, h.log, err) }

// param returns a path parameter percent-decoded.
var param = mxhttp.PathParam

// ids returns the server name and media ID of the path, checked.
func ids(r *http.Request) (string, string, error) {
	origin, mediaID := param(r, "serverName"), param(r, "mediaId")
	if !validServerName(origin) {
		return "", "", mxhttp.InvalidParam("Invalid server name")
	}
	if !ValidMediaID(mediaID) {
		return "", "", mxhttp.InvalidParam("Invalid media ID")
	}
	return origin, mediaID, nil
}

// validServerName accepts the characters of server names (DNS names, IPv4,
// bracketed IPv6, optional port). It is a sanity check: server names never
// name files.
func validServerName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return s[0] != '.' && s[0] != '-'
}

// fetchOptions reads allow_remote and timeout_ms.
func (h *HTTP) fetchOptions(r *http.Request, legacy bool) (Fetch, error) {
	q := r.URL.Query()
	f := Fetch{AllowRemote: true, Wait: DefaultWait, Legacy: legacy, Requester: h.cfg.Requester(r)}
	if v := q.Get("allow_remote"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return f, mxhttp.InvalidParam("allow_remote must be true or false")
		}
		f.AllowRemote = b
	}
	if v := q.Get("timeout_ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return f, mxhttp.InvalidParam("timeout_ms must be a non-negative integer")
		}
		f.Wait = time.Duration(min(ms, MaxWait.Milliseconds())) * time.Millisecond
	}
	return f, nil
}

func (h *HTTP) upload(w http.ResponseWriter, r *http.Request) {
	m, err := h.svc.Upload(r.Context(), h.uploadOf(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"content_uri": h.svc.MXC(m.MediaID)})
}

func (h *HTTP) uploadOf(r *http.Request) Upload {
	return Upload{
		UserID:      h.cfg.UserID(r),
		ContentType: r.Header.Get("Content-Type"),
		Filename:    r.URL.Query().Get("filename"),
		Body:        r.Body,
		Length:      r.ContentLength,
	}
}

func (h *HTTP) create(w http.ResponseWriter, r *http.Request) {
	user := h.cfg.UserID(r)
	if ok, retry := h.rcCreate.Allow(user); !ok {
		h.fail(w, r, mxhttp.LimitExceeded(retry))
		return
	}
	m, err := h.svc.Create(r.Context(), user)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"content_uri": h.svc.MXC(m.MediaID), "unused_expires_at": m.ExpiresTS})
}

func (h *HTTP) uploadTo(w http.ResponseWriter, r *http.Request) {
	origin, mediaID, err := ids(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.svc.UploadTo(r.Context(), origin, mediaID, h.uploadOf(r)); err != nil {
		h.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// download serves GET download; legacy for the unauthenticated endpoints.
func (h *HTTP) download(legacy bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { h.serveDownload(w, r, legacy) }
}

func (h *HTTP) serveDownload(w http.ResponseWriter, r *http.Request, legacy bool) {
	origin, mediaID, err := ids(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	f, err := h.fetchOptions(r, legacy)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	name := ""
	override := chi.URLParam(r, "fileName") != ""
	if override {
		name = param(r, "fileName")
		if !ValidFilename(name) {
			h.fail(w, r, mxhttp.InvalidParam("Invalid file name"))
			return
		}
	}
	m, file, err := h.svc.Download(r.Context(), origin, mediaID, f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer file.Close()
	if !override {
		name = m.UploadName
	}
	ct := m.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	serve(w, r, Served{File: file, ContentType: ct, Filename: name, ModTime: time.UnixMilli(m.UploadedTS)})
}

// maxDimension bounds requested thumbnail sizes; larger requests get the
// original anyway, since thumbnails are never upscaled.
const maxDimension = 1 << 16

// thumbnail serves GET thumbnail; legacy for the unauthenticated endpoints.
func (h *HTTP) thumbnail(legacy bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { h.serveThumbnail(w, r, legacy) }
}

func (h *HTTP) serveThumbnail(w http.ResponseWriter, r *http.Request, legacy bool) {
	origin, mediaID, err := ids(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	f, err := h.fetchOptions(r, legacy)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	p, err := thumbnailOptions(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	s, err := h.svc.ThumbnailAnimated(r.Context(), origin, mediaID, p.width, p.height, p.method, p.animated, f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer s.File.Close()
	serve(w, r, s)
}

// thumbnailParams are the query parameters of a thumbnail request.
type thumbnailParams struct {
	width, height int
	method        string
	animated      bool
}

// thumbnailOptions reads width, height, method and animated.
func thumbnailOptions(r *http.Request) (thumbnailParams, error) {
	q := r.URL.Query()
	var p thumbnailParams
	dims := [2]*int{&p.width, &p.height}
	for i, k := range []string{"width", "height"} {
		v := q.Get(k)
		if v == "" {
			return p, mxhttp.MissingParam("Missing %s", k)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return p, mxhttp.InvalidParam("%s must be a positive integer", k)
		}
		*dims[i] = min(n, maxDimension)
	}
	p.method = q.Get("method")
	if p.method == "" {
		p.method = Scale
	}
	if v := q.Get("animated"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return p, mxhttp.InvalidParam("animated must be true or false")
		}
		p.animated = b
	}
	return p, nil
}

// serve sends content with the headers the spec asks for; ServeContent
// gives Content-Length and range requests.
func serve(w http.ResponseWriter, r *http.Request, s Served) {
	Headers(w.Header(), s.ContentType, s.Filename)
	// Media never changes under its ID; authenticated media must not be
	// kept by shared caches.
	w.Header().Set("Cache-Control", "private, max-age=86400, immutable")
	http.ServeContent(w, r, "", s.ModTime, s.File)
}

func (h *HTTP) config(w http.ResponseWriter, _ *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]int64{"m.upload.size": h.svc.MaxUploadSize()})
}

// previewURL answers GET preview_url with the page's OpenGraph data.
func (h *HTTP) previewURL(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	raw := q.Get("url")
	if raw == "" {
		h.fail(w, r, mxhttp.MissingParam("Missing url"))
		return
	}
	var ts int64
	if v := q.Get("ts"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			h.fail(w, r, mxhttp.InvalidParam("ts must be a non-negative integer"))
			return
		}
		ts = n
	}
	og, err := h.svc.Preview(r.Context(), h.cfg.UserID(r), raw, ts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, og)
}
