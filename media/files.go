package media

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// fileStore keeps content on disk, content-addressed:
//
//	<root>/content/ab/cd/abcd…(64 hex digits of SHA-256)
//	<root>/tmp/upload-*   bytes being received
//
// A file is written under tmp/, synced, then renamed into content/, so a
// crash never leaves a partial file under a content name, and a content name
// that exists always holds exactly the bytes its name hashes.
type fileStore struct {
	root string
	log  *slog.Logger
}

// staleTemp is the age after which a leftover temporary file (from a crash)
// is removed at start-up. It is not zero because other processes may share
// the store and be receiving uploads right now.
const staleTemp = time.Hour

func openFileStore(root string, log *slog.Logger) (*fileStore, error) {
	if root == "" {
		return nil, errors.New("media: media_store_path is empty")
	}
	for _, d := range []string{root, filepath.Join(root, "content"), filepath.Join(root, "tmp")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("media: creating %s: %w", d, err)
		}
	}
	f := &fileStore{root: root, log: log}
	f.sweepTemp(time.Now().Add(-staleTemp))
	return f, nil
}

// sweepTemp removes temporary files last written before cutoff.
func (f *fileStore) sweepTemp(cutoff time.Time) {
	entries, err := os.ReadDir(filepath.Join(f.root, "tmp"))
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err == nil && info.ModTime().Before(cutoff) {
			_ = os.Remove(filepath.Join(f.root, "tmp", e.Name()))
		}
	}
}

// path returns the content path of a hex SHA-256. sum is always computed by
// this package, never taken from a client; it is checked anyway.
func (f *fileStore) path(sum string) (string, error) {
	if len(sum) != 64 {
		return "", fmt.Errorf("media: bad content hash %q", sum)
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return "", fmt.Errorf("media: bad content hash %q", sum)
	}
	return filepath.Join(f.root, "content", sum[0:2], sum[2:4], sum), nil
}

func (f *fileStore) open(sum string) (*os.File, error) {
	p, err := f.path(sum)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("media: content %s missing from the media store: %w", sum, err)
	}
	return file, err
}

// BodyError is a failure to read the request body: the client went away
// or sent less than it announced.
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "reading upload: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

// errReader remembers the error of its reader, so that read failures (the
// client's) are told apart from write failures (the server's).
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// errTooLarge is returned by put when the content exceeds its limit.
var errTooLarge = errors.New("media: content too large")

// put stores the bytes of r, at most limit of them, and returns their hex
// SHA-256 and length. On any failure (a read error from an aborted upload,
// errTooLarge) nothing is left behind.
func (f *fileStore) put(r io.Reader, limit int64) (sum string, n int64, err error) {
	tmp, err := os.CreateTemp(filepath.Join(f.root, "tmp"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("media: temporary file: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	body := &errReader{r: io.LimitReader(r, limit+1)}
	n, err = io.Copy(io.MultiWriter(tmp, h), body)
	if body.err != nil {
		return "", 0, &BodyError{Err: body.err}
	}
	if err != nil {
		return "", 0, fmt.Errorf("media: writing %s: %w", tmp.Name(), err)
	}
	if n > limit {
		return "", 0, errTooLarge
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("media: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("media: close: %w", err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	dst, err := f.path(sum)
	if err != nil {
		return "", 0, err
	}
	if _, err := os.Stat(dst); err == nil {
		// The same bytes are stored already: keep one copy.
		return sum, n, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return "", 0, fmt.Errorf("media: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", 0, fmt.Errorf("media: %w", err)
	}
	committed = true
	syncDir(filepath.Dir(dst))
	return sum, n, nil
}

// putBytes stores b (a generated thumbnail).
func (f *fileStore) putBytes(b []byte) (string, error) {
	sum, _, err := f.put(bytes.NewReader(b), int64(len(b)))
	return sum, err
}

// syncDir makes a rename durable; failure only weakens durability, so it is
// not an error.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
