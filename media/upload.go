package media

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"homeserver/mxhttp"
)

// Upload is one upload request.
type Upload struct {
	UserID      string
	ContentType string // as sent; cleaned by the service
	Filename    string // as sent; "" for none
	Body        io.Reader
	Length      int64 // declared Content-Length, or -1

	noQuota   bool  // not counted against UserID's quota (preview images)
	quotaLeft int64 // bytes UserID may still upload; 0 when unlimited
}

func (s *Service) tooLarge() *mxhttp.Error {
	return mxhttp.TooLarge("Cannot upload files larger than %d bytes", s.cfg.MaxUploadSize)
}

// checkUpload refuses what can be refused before reading the body.
func (s *Service) checkUpload(ctx context.Context, u *Upload) error {
	if u.Length > s.cfg.MaxUploadSize {
		return s.tooLarge()
	}
	if !u.noQuota && u.UserID != "" {
		left, err := s.quota.check(ctx, u.UserID, u.Length, s.now())
		if err != nil {
			return err
		}
		u.quotaLeft = left
	}
	if !ValidFilename(u.Filename) {
		return mxhttp.InvalidParam("Invalid filename: at most 255 bytes of UTF-8 without control characters")
	}
	u.ContentType = CleanContentType(u.ContentType)
	return nil
}

// stored is what ingesting an upload produced.
type stored struct {
	sum           string
	size          int64
	width, height int
}

// ingest writes the body to the store and probes it as an image.
func (s *Service) ingest(ctx context.Context, u Upload) (stored, error) {
	limit := s.cfg.MaxUploadSize
	quotaBound := u.quotaLeft > 0 && u.quotaLeft < limit
	if quotaBound {
		limit = u.quotaLeft
	}
	sum, n, err := s.files.put(u.Body, limit)
	if errors.Is(err, errTooLarge) {
		if quotaBound {
			return stored{}, errQuota()
		}
		return stored{}, s.tooLarge()
	}
	var be *BodyError
	if errors.As(err, &be) {
		// Nothing was kept.
		return stored{}, mxhttp.Unknown("Upload interrupted: %v", be.Err)
	}
	if err != nil {
		return stored{}, err
	}
	st := stored{sum: sum, size: n}
	st.width, st.height = s.probe(sum)
	return st, nil
}

// probe returns the size of stored content as an image, after EXIF
// orientation, from its header alone; 0, 0 for anything that is not an
// image. It does not decode the pixels: an upload answers as soon as its
// bytes are stored, and thumbnails are made afterwards (see enqueue), so
// an image whose header is fine but whose data is not fails then.
func (s *Service) probe(sum string) (width, height int) {
	f, err := s.files.open(sum)
	if err != nil {
		s.log.Error("opening stored media", "sha256", sum, "err", err)
		return 0, 0
	}
	defer f.Close()
	cfg, format, err := image.DecodeConfig(f)
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 {
		return 0, 0
	}
	if format != "jpeg" {
		return cfg.Width, cfg.Height
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, 0
	}
	return orientedSize(cfg.Width, cfg.Height, readOrientation(f))
}

// Upload stores a complete upload under a new media ID.
func (s *Service) Upload(ctx context.Context, u Upload) (Metadata, error) {
	if err := s.checkUpload(ctx, &u); err != nil {
		return Metadata{}, err
	}
	st, err := s.ingest(ctx, u)
	if err != nil {
		return Metadata{}, err
	}
	now := s.nowMS()
	m := Metadata{
		Origin: s.cfg.ServerName, MediaID: newMediaID(), UserID: u.UserID,
		ContentType: u.ContentType, UploadName: u.Filename, Size: st.size, SHA256: st.sum,
		Width: st.width, Height: st.height, CreatedTS: now, UploadedTS: now,
		Authenticated: s.cfg.AuthenticatedMedia,
	}
	if err := s.store.InsertMedia(ctx, m); err != nil {
		return Metadata{}, err
	}
	s.enqueue(m)
	return m, nil
}

// Create reserves a media ID for a later upload by userID.
func (s *Service) Create(ctx context.Context, userID string) (Metadata, error) {
	now := s.nowMS()
	n, err := s.store.CountPendingMedia(ctx, userID, now)
	if err != nil {
		return Metadata{}, err
	}
	if n >= s.cfg.MaxPending {
		e := mxhttp.LimitExceeded(time.Minute)
		e.Message = fmt.Sprintf("Too many pending media uploads (at most %d)", s.cfg.MaxPending)
		return Metadata{}, e
	}
	m := Metadata{
		Origin: s.cfg.ServerName, MediaID: newMediaID(), UserID: userID,
		CreatedTS: now, ExpiresTS: now + s.cfg.PendingLifetime.Milliseconds(),
		Authenticated: s.cfg.AuthenticatedMedia,
	}
	if err := s.store.CreatePendingMedia(ctx, m); err != nil {
		return Metadata{}, err
	}
	return m, nil
}

// UploadTo stores the bytes of a media ID created with Create.
func (s *Service) UploadTo(ctx context.Context, origin, mediaID string, u Upload) error {
	if origin != s.cfg.ServerName || !ValidMediaID(mediaID) {
		return mxhttp.NotFound("Unknown media ID")
	}
	m, err := s.store.GetMedia(ctx, origin, mediaID)
	if errors.Is(err, ErrNotFound) {
		return mxhttp.NotFound("Unknown media ID")
	}
	if err != nil {
		return err
	}
	if m.UserID != u.UserID {
		return mxhttp.Forbidden("This media ID was created by another user")
	}
	if !m.Pending() {
		return errCannotOverwrite()
	}
	if m.ExpiresTS <= s.nowMS() {
		return mxhttp.NotFound("Media ID expired")
	}
	if err := s.checkUpload(ctx, &u); err != nil {
		return err
	}
	st, err := s.ingest(ctx, u)
	if err != nil {
		return err
	}
	m.ContentType, m.UploadName, m.Size, m.SHA256 = u.ContentType, u.Filename, st.size, st.sum
	m.Width, m.Height, m.UploadedTS = st.width, st.height, s.nowMS()
	switch err := s.store.CompletePendingMedia(ctx, m); {
	case errors.Is(err, ErrAlreadyUploaded):
		return errCannotOverwrite() // lost a race with a concurrent PUT
	case errors.Is(err, ErrNotFound):
		return mxhttp.NotFound("Unknown media ID")
	case err != nil:
		return err
	}
	s.enqueue(m)
	return nil
}

// Fetch options of downloads and thumbnails.
type Fetch struct {
	AllowRemote bool
	// Wait is how long to wait for a pending upload (timeout_ms).
	Wait time.Duration
	// Legacy is set by the unauthenticated endpoints: with
	// AuthenticatedMedia, media marked authenticated is not found there,
	// and remote media is not fetched.
	Legacy bool
	// Requester is who asks (a user, client address or server), for the
	// rate limit of thumbnail generation.
	Requester string
}

// frozen reports whether f may only see media stored before
// enable_authenticated_media.
func (s *Service) frozen(f Fetch) bool { return f.Legacy && s.cfg.AuthenticatedMedia }

// DefaultWait is the spec's default timeout_ms; MaxWait caps what a client
// may ask for.
const (
	DefaultWait = 20 * time.Second
	MaxWait     = 2 * time.Minute
)

// pollEvery is how often a download waiting for a pending upload looks
// again. Polling the database (rather than an in-process signal) keeps
// waiting correct when another process receives the upload.
const pollEvery = 200 * time.Millisecond

// get returns complete metadata of a media ID, waiting up to f.Wait for a
// pending upload. Quarantined media is not found, whoever asks; media
// found is recorded as accessed.
func (s *Service) get(ctx context.Context, origin, mediaID string, f Fetch) (Metadata, error) {
	m, err := s.lookup(ctx, origin, mediaID, f)
	if err != nil {
		return Metadata{}, err
	}
	if m.QuarantinedBy != "" {
		return Metadata{}, errNotFound()
	}
	s.touch(ctx, m)
	return m, nil
}

// lookup is get without the quarantine and the access record.
func (s *Service) lookup(ctx context.Context, origin, mediaID string, f Fetch) (Metadata, error) {
	if !ValidMediaID(mediaID) {
		return Metadata{}, mxhttp.InvalidParam("Invalid media ID")
	}
	if origin != s.cfg.ServerName {
		m, err := s.remoteGet(ctx, origin, mediaID, f.AllowRemote && !s.frozen(f))
		if err == nil && s.frozen(f) && m.Authenticated {
			return Metadata{}, errNotFound()
		}
		return m, err
	}
	deadline := time.Now().Add(min(f.Wait, MaxWait))
	for {
		m, err := s.store.GetMedia(ctx, origin, mediaID)
		if errors.Is(err, ErrNotFound) {
			return Metadata{}, errNotFound()
		}
		if err != nil {
			return Metadata{}, err
		}
		if s.frozen(f) && m.Authenticated {
			return Metadata{}, errNotFound()
		}
		if !m.Pending() {
			return m, nil
		}
		if m.ExpiresTS <= s.nowMS() {
			return Metadata{}, errNotFound()
		}
		left := time.Until(deadline)
		if left <= 0 {
			return Metadata{}, errNotYetUploaded()
		}
		t := time.NewTimer(min(left, pollEvery))
		select {
		case <-ctx.Done():
			t.Stop()
			return Metadata{}, ctx.Err()
		case <-t.C:
		}
	}
}

// Download opens the content of a media ID. The caller closes the file.
func (s *Service) Download(ctx context.Context, origin, mediaID string, f Fetch) (Metadata, *os.File, error) {
	m, err := s.get(ctx, origin, mediaID, f)
	if err != nil {
		return Metadata{}, nil, err
	}
	file, err := s.open(m)
	if err != nil {
		return Metadata{}, nil, err
	}
	return m, file, nil
}

// CleanContentType returns a well-formed media type for what a client sent:
// application/octet-stream when it sent none or nonsense.
func CleanContentType(ct string) string {
	const fallback = "application/octet-stream"
	if ct == "" || len(ct) > 255 {
		return fallback
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") {
		return fallback
	}
	if out := mime.FormatMediaType(mt, params); out != "" {
		return out
	}
	return fallback
}

// ValidFilename accepts "" and names of at most 255 bytes of UTF-8 without
// control characters. Filenames are only ever sent back in
// Content-Disposition; they never name a file on disk.
func ValidFilename(name string) bool {
	if len(name) > 255 || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// inlineTypes are the types the spec allows serving with
// Content-Disposition: inline.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true,
	"image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true,
	"audio/ogg": true, "audio/wave": true, "audio/wav": true, "audio/x-wav": true,
	"audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// ContentDisposition returns the Content-Disposition for serving content
// of type contentType under filename: inline only for the spec's safe
// types, attachment otherwise.
func ContentDisposition(contentType, filename string) string {
	disp := "attachment"
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && inlineTypes[mt] {
		disp = "inline"
	}
	if filename == "" {
		return disp
	}
	if v := mime.FormatMediaType(disp, map[string]string{"filename": filename}); v != "" {
		return v
	}
	return disp
}

// Headers sets the headers every piece of served content carries.
func Headers(h http.Header, contentType, filename string) {
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", ContentDisposition(contentType, filename))
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
}
