package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"time"

	"homeserver/mxhttp"
	"homeserver/netguard"
)

// Remote sends signed requests to other servers: federation's client
// (transport.Client.DoStream). read gets the answer, whatever its status;
// an error returned before any answer (no route, refused destination)
// wrapping ErrNotFound means the media cannot exist.
type Remote interface {
	DoStream(ctx context.Context, method, destination, requestURI string, body any,
		read func(status int, header http.Header, body io.Reader) error) error
}

// maxErrorBody bounds what is read of an error answer, or of the JSON
// part of a multipart download.
const maxErrorBody = 64 << 10

// remoteStatus is a non-200 answer of the origin.
type remoteStatus struct {
	status int
	code   string
}

func (e *remoteStatus) Error() string {
	return fmt.Sprintf("origin answered %d %s", e.status, e.code)
}

func readRemoteStatus(status int, body io.Reader) *remoteStatus {
	b, _ := io.ReadAll(io.LimitReader(body, maxErrorBody))
	var m struct {
		Code string `json:"errcode"`
	}
	_ = json.Unmarshal(b, &m)
	return &remoteStatus{status: status, code: m.Code}
}

// remoteGet returns the metadata of origin's mediaID: from the cache, else
// fetched from origin once however many ask at the same time (unless
// allowRemote is false).
func (s *Service) remoteGet(ctx context.Context, origin, mediaID string, allowRemote bool) (Metadata, error) {
	m, err := s.store.GetMedia(ctx, origin, mediaID)
	if err == nil && !m.Pending() {
		return m, nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Metadata{}, err
	}
	if !allowRemote || s.remote == nil || !validServerName(origin) {
		return Metadata{}, errNotFound()
	}
	// The fetch outlives a caller that goes away: others may be waiting,
	// and the next request would start it again. The client's timeout
	// bounds it.
	ch := s.flight.DoChan("remote\x00"+origin+"\x00"+mediaID, func() (any, error) {
		return s.fetchRemote(context.WithoutCancel(ctx), origin, mediaID)
	})
	select {
	case <-ctx.Done():
		return Metadata{}, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return Metadata{}, r.Err
		}
		return r.Val.(Metadata), nil
	}
}

// remoteContent is what a download from the origin stored.
type remoteContent struct {
	contentType, filename string
	sum                   string
	size                  int64
}

// fetchRemote downloads origin's mediaID with the federation endpoint,
// or the legacy one from servers that do not know it, and caches it.
func (s *Service) fetchRemote(ctx context.Context, origin, mediaID string) (Metadata, error) {
	// Another process may have fetched it meanwhile.
	if m, err := s.store.GetMedia(ctx, origin, mediaID); err == nil && !m.Pending() {
		return m, nil
	}
	var got remoteContent
	legacy := false
	err := s.remote.DoStream(ctx, http.MethodGet, origin, "/_matrix/federation/v1/media/download/"+url.PathEscape(mediaID), nil,
		func(status int, h http.Header, body io.Reader) error {
			if status == http.StatusOK {
				return s.readMultipart(ctx, h, body, &got)
			}
			e := readRemoteStatus(status, body)
			// Servers before Matrix 1.11 do not know the endpoint.
			if status == http.StatusBadRequest || status == http.StatusMethodNotAllowed ||
				status == http.StatusNotFound && e.code != "M_NOT_FOUND" {
				legacy = true
				return nil
			}
			return e
		})
	if err == nil && legacy {
		uri := "/_matrix/media/v3/download/" + url.PathEscape(origin) + "/" + url.PathEscape(mediaID) + "?allow_remote=false"
		err = s.remote.DoStream(ctx, http.MethodGet, origin, uri, nil, func(status int, h http.Header, body io.Reader) error {
			if status != http.StatusOK {
				return readRemoteStatus(status, body)
			}
			return s.readContent(h.Get("Content-Type"), h.Get("Content-Disposition"), body, &got)
		})
	}
	if err != nil {
		return Metadata{}, s.remoteError(origin, mediaID, err)
	}
	width, height := s.probe(got.sum)
	now := s.nowMS()
	m := Metadata{
		Origin: origin, MediaID: mediaID, ContentType: got.contentType, UploadName: got.filename,
		Size: got.size, SHA256: got.sum, Width: width, Height: height, CreatedTS: now, UploadedTS: now,
		Authenticated: s.cfg.AuthenticatedMedia,
	}
	if err := s.store.InsertMedia(ctx, m); err != nil {
		// Another process may have cached it first.
		if other, gerr := s.store.GetMedia(ctx, origin, mediaID); gerr == nil && !other.Pending() {
			return other, nil
		}
		return Metadata{}, fmt.Errorf("media: caching %s/%s: %w", origin, mediaID, err)
	}
	s.log.Debug("cached remote media", "origin", origin, "media_id", mediaID, "size", m.Size)
	s.enqueue(m)
	return m, nil
}

// remoteError is what a client is told of a failed fetch: 404 when the
// origin says there is no such media, 502 otherwise, as Synapse answers.
func (s *Service) remoteError(origin, mediaID string, err error) error {
	var rs *remoteStatus
	var mx *mxhttp.Error
	switch {
	case errors.As(err, &mx):
		return mx
	case errors.Is(err, ErrNotFound), errors.As(err, &rs) && rs.status == http.StatusNotFound:
		return errNotFound()
	}
	s.log.Warn("fetching remote media", "origin", origin, "media_id", mediaID, "err", err)
	return &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: "Failed to fetch remote media"}
}

var errBadRemote = &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: "The remote server sent an invalid media response"}

// readMultipart reads the multipart/mixed answer of the federation
// download endpoint: a JSON object, then the content or a Location to
// fetch it from.
func (s *Service) readMultipart(ctx context.Context, h http.Header, body io.Reader, got *remoteContent) error {
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return errBadRemote
	}
	mr := multipart.NewReader(body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return fmt.Errorf("%w: %w", errBadRemote, err)
	}
	b, err := io.ReadAll(io.LimitReader(meta, maxErrorBody+1))
	if err != nil || len(b) > maxErrorBody || !json.Valid(b) || !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
		return errBadRemote
	}
	part, err := mr.NextPart()
	if err != nil {
		return fmt.Errorf("%w: %w", errBadRemote, err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		return s.followLocation(ctx, loc, part.Header, got)
	}
	return s.readContent(part.Header.Get("Content-Type"), part.Header.Get("Content-Disposition"), part, got)
}

// errRedirectAgain refuses a redirect from where a Location pointed: the
// origin's answer names the content's place, one hop.
var errRedirectAgain = errors.New("media: the media redirect redirects again")

// newRedirectClient returns the client that follows remote media
// redirects. The origin chooses the URL, so, as for URL previews, every
// address it reaches is checked against the blocklist and pinned, and no
// proxy (which would connect where nothing checks) is used.
func newRedirectClient(guard *netguard.Guard) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           guard.DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 20 * time.Second,
			MaxIdleConns:          8,
			IdleConnTimeout:       30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirectAgain },
	}
}

// followLocation stores the content a federation download redirected to:
// one GET, within RedirectTimeout and max_upload_size. The type and file
// name come from that answer, else from the part that redirected.
func (s *Service) followLocation(ctx context.Context, location string, part textproto.MIMEHeader, got *remoteContent) error {
	u, err := url.Parse(location)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errBadRemote
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RedirectTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return errBadRemote
	}
	// Only the host is logged: such URLs often carry a signature.
	resp, err := s.redirects.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("media: following the media redirect to %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("media: the media redirect to %s answered %d", u.Host, resp.StatusCode)
	}
	if resp.ContentLength > s.cfg.MaxUploadSize {
		return s.remoteTooLarge()
	}
	ct, disp := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition")
	if ct == "" {
		ct = part.Get("Content-Type")
	}
	if disp == "" {
		disp = part.Get("Content-Disposition")
	}
	return s.readContent(ct, disp, resp.Body, got)
}

func (s *Service) remoteTooLarge() *mxhttp.Error {
	return &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_TOO_LARGE",
		Message: fmt.Sprintf("Remote media is larger than %d bytes", s.cfg.MaxUploadSize)}
}

// readContent stores the content of a download, at most max_upload_size.
func (s *Service) readContent(contentType, disposition string, body io.Reader, got *remoteContent) error {
	sum, n, err := s.files.put(body, s.cfg.MaxUploadSize)
	if errors.Is(err, errTooLarge) {
		return s.remoteTooLarge()
	}
	if err != nil {
		return err
	}
	got.contentType, got.sum, got.size = CleanContentType(contentType), sum, n
	if _, params, err := mime.ParseMediaType(disposition); err == nil && ValidFilename(params["filename"]) {
		got.filename = params["filename"]
	}
	return nil
}
