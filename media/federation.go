package media

import (
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
)

// MountFederation registers the federation content repository endpoints
// (the "federation" listener resource), which serve this server's own
// media to other servers; auth is the X-Matrix authentication
// (transport.Middleware).
func (h *HTTP) MountFederation(r chi.Router, auth func(http.Handler) http.Handler) {
	r.Group(func(r chi.Router) {
		r.Use(auth)
		r.Get("/_matrix/federation/v1/media/download/{mediaId}", h.fedDownload)
		r.Get("/_matrix/federation/v1/media/thumbnail/{mediaId}", h.fedThumbnail)
	})
}

// fedMediaID returns the media ID of the path, and the fetch options of a
// federation request: local media only.
func (h *HTTP) fedMediaID(r *http.Request) (string, Fetch, error) {
	mediaID := param(r, "mediaId")
	if !ValidMediaID(mediaID) {
		return "", Fetch{}, mxhttp.InvalidParam("Invalid media ID")
	}
	f, err := h.fetchOptions(r, false)
	f.AllowRemote = false
	return mediaID, f, err
}

func (h *HTTP) fedDownload(w http.ResponseWriter, r *http.Request) {
	mediaID, f, err := h.fedMediaID(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	m, file, err := h.svc.Download(r.Context(), h.svc.cfg.ServerName, mediaID, f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer file.Close()
	ct := m.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.writeMultipart(w, r, file, ct, m.UploadName)
}

func (h *HTTP) fedThumbnail(w http.ResponseWriter, r *http.Request) {
	mediaID, f, err := h.fedMediaID(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	p, err := thumbnailOptions(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	s, err := h.svc.ThumbnailAnimated(r.Context(), h.svc.cfg.ServerName, mediaID, p.width, p.height, p.method, p.animated, f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer s.File.Close()
	h.writeMultipart(w, r, s.File, s.ContentType, s.Filename)
}

// writeMultipart answers multipart/mixed as the spec asks: an empty JSON
// object (the metadata, of which none is defined yet), then the content
// with its type and disposition.
func (h *HTTP) writeMultipart(w http.ResponseWriter, r *http.Request, content io.Reader, contentType, filename string) {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	err := func() error {
		meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
		if err != nil {
			return err
		}
		if _, err := io.WriteString(meta, "{}"); err != nil {
			return err
		}
		part, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":        {contentType},
			"Content-Disposition": {ContentDisposition(contentType, filename)},
		})
		if err != nil {
			return err
		}
		if _, err := io.Copy(part, content); err != nil {
			return err
		}
		return mw.Close()
	}()
	if err != nil {
		// The status is sent: all that is left is to cut the answer short.
		h.log.Debug("sending federation media", "path", r.URL.Path, "err", err)
	}
}
