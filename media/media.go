// Package media is the content repository: uploads (direct, and created
// ahead with /create then PUT), downloads, thumbnails and the media
// configuration. Bytes live on disk under media_store_path, named by their
// SHA-256 so that identical content is stored once; metadata lives in the
// database through Store. Nothing a client sends ever becomes part of a
// file-system path: files are named by hashes this package computes.
package media

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"homeserver/mxhttp"
	"homeserver/netguard"
	"homeserver/ratelimit"
)

// Errors of Store.
var (
	ErrNotFound        = errors.New("media: not found")
	ErrAlreadyUploaded = errors.New("media: already uploaded")
)

// Metadata describes one media ID.
type Metadata struct {
	Origin      string
	MediaID     string
	UserID      string
	ContentType string
	UploadName  string
	Size        int64
	SHA256      string // hex; "" while pending
	Width       int    // after EXIF orientation; 0 if not a decodable image
	Height      int
	CreatedTS   int64
	UploadedTS  int64 // 0 while pending
	ExpiresTS   int64 // when a pending ID expires unused
	// Authenticated media was stored while enable_authenticated_media was
	// on: the legacy unauthenticated endpoints do not serve it.
	Authenticated bool
	// LastAccessTS is when the content was last served (0: never).
	LastAccessTS int64
	// QuarantinedBy is the admin who quarantined the media ("" when it is
	// not): quarantined media is served to no one.
	QuarantinedBy string
	// SafeFromQuarantine protects the media from bulk quarantines.
	SafeFromQuarantine bool
}

// Pending reports whether the media ID was created but has no bytes yet.
func (m Metadata) Pending() bool { return m.UploadedTS == 0 }

// Thumbnail describes one stored thumbnail.
type Thumbnail struct {
	Origin, MediaID string
	Method          string // "crop" or "scale"
	Width, Height   int    // actual pixel size
	ContentType     string
	Size            int64
	SHA256          string
	CreatedTS       int64
}

// Store is the SQL the content repository needs (storage implements it).
type Store interface {
	// InsertMedia records a complete upload.
	InsertMedia(ctx context.Context, m Metadata) error
	// CreatePendingMedia records a media ID created ahead of its upload.
	CreatePendingMedia(ctx context.Context, m Metadata) error
	// CompletePendingMedia fills in a pending media ID; ErrNotFound if there
	// is no such pending ID, ErrAlreadyUploaded if it has its bytes already.
	CompletePendingMedia(ctx context.Context, m Metadata) error
	// GetMedia returns ErrNotFound when the media ID is unknown.
	GetMedia(ctx context.Context, origin, mediaID string) (Metadata, error)
	// CountPendingMedia counts userID's pending, unexpired media IDs.
	CountPendingMedia(ctx context.Context, userID string, now int64) (int, error)
	// UploadedBytesSince sums the sizes of what userID uploaded at or
	// after since (ms).
	UploadedBytesSince(ctx context.Context, userID string, since int64) (int64, error)
	ListThumbnails(ctx context.Context, origin, mediaID string) ([]Thumbnail, error)
	// InsertThumbnail ignores a thumbnail that is already recorded.
	InsertThumbnail(ctx context.Context, t Thumbnail) error
}

// ThumbnailSize is one size generated at upload (thumbnail_sizes).
type ThumbnailSize struct {
	Width, Height int
	Method        string
}

// Config is what the content repository needs of homeserver.yaml.
type Config struct {
	ServerName     string
	StorePath      string
	MaxUploadSize  int64
	MaxImagePixels int64
	ThumbnailSizes []ThumbnailSize
	// PendingLifetime is how long a media ID from /create stays usable
	// (Synapse's unused_expiration_time, 24h); MaxPending bounds the pending
	// IDs of one user (Synapse's max_pending_media_uploads, 5).
	PendingLifetime time.Duration
	MaxPending      int
	// DynamicThumbnails makes thumbnails of the requested size; without
	// it a request gets the nearest of ThumbnailSizes (Synapse's
	// dynamic_thumbnails).
	DynamicThumbnails bool
	// AuthenticatedMedia marks what is stored from now on as authenticated
	// (Synapse's enable_authenticated_media): the legacy endpoints do not
	// serve it, nor fetch remote media.
	AuthenticatedMedia bool
	// ThumbnailMemory bounds the bytes of pixels held at once by every
	// image being decoded, resized and encoded, from the decode until the
	// last thumbnail is written. Default 512 MiB.
	ThumbnailMemory int64
	// RcThumbnail limits the thumbnails generated on request, per
	// requester (rc_media_thumbnail); zero for no limit.
	RcThumbnailPerSecond float64
	RcThumbnailBurst     int
	// ThumbnailWorkers make the thumbnail_sizes of new media after the
	// upload has answered (default 1, leaving the other cores to
	// requests); ThumbnailQueue bounds the media waiting for them (default
	// 256; beyond it, thumbnails are made on their first request).
	ThumbnailWorkers int
	ThumbnailQueue   int
	// RedirectGuard checks where a remote server's media redirect
	// (Location) points; nil for netguard's default blocklist.
	// RedirectTimeout bounds the following of one. Default 60s.
	RedirectGuard   *netguard.Guard
	RedirectTimeout time.Duration
	// UploadLimits are per-user upload quotas; empty for none.
	UploadLimits []UploadLimit
	// Preview configures URL previews (off unless Preview.Enabled).
	Preview PreviewConfig
	Logger  *slog.Logger
	Now     func() time.Time
}

// Service is the content repository.
type Service struct {
	cfg    Config
	store  Store
	files  *fileStore
	remote Remote
	log    *slog.Logger
	now    func() time.Time
	pixels *semaphore.Weighted // of ThumbnailMemory bytes
	flight singleflight.Group  // remote fetches
	queue  *thumbQueue
	// inflight are the thumbnails being made, by workers and requests.
	inflight    thumbFlights
	undecodable undecodableSet
	hooks       testHooks
	quota       *quotaTracker
	rcThumb     *ratelimit.Limiter
	// redirects follows remote media redirects: guarded, never further.
	redirects *http.Client
	prev      *previewer // nil when previews are disabled
}

// New opens the media store directory (creating it) and returns the service.
func New(cfg Config, store Store) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PendingLifetime <= 0 {
		cfg.PendingLifetime = 24 * time.Hour
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 5
	}
	if cfg.ThumbnailMemory <= 0 {
		cfg.ThumbnailMemory = 512 << 20
	}
	if cfg.ThumbnailWorkers <= 0 {
		cfg.ThumbnailWorkers = 1
	}
	if cfg.ThumbnailQueue <= 0 {
		cfg.ThumbnailQueue = 256
	}
	if cfg.RedirectGuard == nil {
		cfg.RedirectGuard = netguard.New(netguard.Options{Block: netguard.DefaultBlocklist()})
	}
	if cfg.RedirectTimeout <= 0 {
		cfg.RedirectTimeout = 60 * time.Second
	}
	if cfg.MaxImagePixels <= 0 {
		cfg.MaxImagePixels = 32 << 20
	}
	fs, err := openFileStore(cfg.StorePath, cfg.Logger)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg, store: store, files: fs, log: cfg.Logger, now: cfg.Now,
		pixels:    semaphore.NewWeighted(cfg.ThumbnailMemory),
		queue:     newThumbQueue(cfg.ThumbnailWorkers, cfg.ThumbnailQueue),
		rcThumb:   ratelimit.New(cfg.RcThumbnailPerSecond, cfg.RcThumbnailBurst),
		redirects: newRedirectClient(cfg.RedirectGuard),
		quota: newQuotaTracker(cfg.UploadLimits, func(ctx context.Context, user string, since time.Time) (int64, error) {
			return store.UploadedBytesSince(ctx, user, since.UnixMilli())
		}),
	}
	if cfg.Preview.Enabled {
		s.prev = newPreviewer(s, cfg.Preview)
	}
	return s, nil
}

// SetRemote installs federation's client, which fetches other servers'
// media into the local cache; without it remote media is not found.
func (s *Service) SetRemote(r Remote) { s.remote = r }

// MaxUploadSize is the largest upload accepted, in bytes.
func (s *Service) MaxUploadSize() int64 { return s.cfg.MaxUploadSize }

func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

// Matrix errors of the content repository that mxhttp has no constructor for.
func errNotYetUploaded() *mxhttp.Error {
	return &mxhttp.Error{Status: http.StatusGatewayTimeout, Code: "M_NOT_YET_UPLOADED", Message: "Content has not yet been uploaded"}
}

func errCannotOverwrite() *mxhttp.Error {
	return &mxhttp.Error{Status: http.StatusConflict, Code: "M_CANNOT_OVERWRITE_MEDIA", Message: "Media already uploaded"}
}

func errNotFound() *mxhttp.Error { return mxhttp.NotFound("Media not found") }

var mediaIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// ValidMediaID reports whether id is a media ID as the spec allows them:
// only A-Z, a-z, 0-9, "_" and "-" (here also at most 255 characters).
func ValidMediaID(id string) bool { return mediaIDRe.MatchString(id) }

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newMediaID returns 24 random characters (about 143 bits).
func newMediaID() string {
	b := make([]byte, 24)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(fmt.Sprintf("media: reading random bytes: %v", err)) // crypto/rand does not fail
	}
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)] // 256 % 62 bias is negligible here
	}
	return string(b)
}

// MXC returns the mxc:// URI of a local media ID.
func (s *Service) MXC(mediaID string) string { return "mxc://" + s.cfg.ServerName + "/" + mediaID }

// open opens the content of m.
func (s *Service) open(m Metadata) (*os.File, error) { return s.files.open(m.SHA256) }
