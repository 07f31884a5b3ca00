package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"homeserver/mxhttp"
)

// Timeouts bound how long a client may take to send a request. None of them
// bounds the answer: long-polls (/sync, /events, /initialSync) keep their own
// deadline, so the server has no WriteTimeout.
type Timeouts struct {
	// Header is the time allowed to send the request line and headers.
	Header time.Duration
	// Body is the time allowed to send a request body, from the end of
	// the headers.
	Body time.Duration
	// Upload replaces Body for media uploads, which may be large and come
	// over slow links.
	Upload time.Duration
	// Idle is how long a kept-alive connection waits for its next request.
	Idle time.Duration
}

// DefaultTimeouts lets a client on a slow link send a 1 MiB JSON body in a
// minute, and a large upload in ten.
var DefaultTimeouts = Timeouts{Header: 10 * time.Second, Body: time.Minute, Upload: 10 * time.Minute, Idle: 2 * time.Minute}

// maxHeaderBytes bounds a request's headers; beyond it net/http answers 431.
const maxHeaderBytes = 64 << 10

// newHTTPServer builds the http.Server of one listener.
func newHTTPServer(h http.Handler, t Timeouts, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.Header,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// bodyDeadline gives every request with a body a deadline to finish
// sending it: without one, a client trickling a byte at a time holds a
// connection and a goroutine for as long as it likes. The deadline is on
// the connection's reads, and is lifted once the body is read: net/http
// then reads in the background to notice a client going away, and a
// deadline passing there would cancel a long-running answer. Requests
// without a body get none for the same reason (that background read has
// already started).
func bodyDeadline(t Timeouts) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Body == nil || r.Body == http.NoBody {
				next.ServeHTTP(w, r)
				return
			}
			d := t.Body
			if isUpload(r) {
				d = t.Upload
			}
			rc := http.NewResponseController(w)
			// ErrNotSupported (a test's recorder, HTTP/2 before Go
			// supports it there) leaves the request as it was.
			if rc.SetReadDeadline(time.Now().Add(d)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// isUpload tells media uploads (POST /_matrix/media/*/upload, PUT
// /_matrix/media/*/upload/{serverName}/{mediaId}) apart.
func isUpload(r *http.Request) bool {
	rest, ok := strings.CutPrefix(r.URL.Path, "/_matrix/media/")
	if !ok {
		return false
	}
	_, rest, _ = strings.Cut(rest, "/")
	return rest == "upload" || strings.HasPrefix(rest, "upload/")
}

// deadlineBody lifts the read deadline when the body has been read.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// jsonErrors turns the plain-text error answers of net/http's helpers
// (http.Error, and through it http.ServeContent's 416 for an unsatisfiable
// range) into Matrix errors with the same status. Headers already set (a
// 416's Content-Range) are kept.
func jsonErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&jsonErrorWriter{ResponseWriter: w}, r)
	})
}

type jsonErrorWriter struct {
	http.ResponseWriter
	wroteHeader bool
	// discard drops the plain-text body that follows a rewritten header.
	discard bool
}

func (w *jsonErrorWriter) WriteHeader(code int) {
	if w.wroteHeader {
		w.ResponseWriter.WriteHeader(code) // net/http logs the superfluous call
		return
	}
	if code >= 100 && code < 200 {
		w.ResponseWriter.WriteHeader(code) // informational: the real one follows
		return
	}
	w.wroteHeader = true
	if code >= 400 && strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		w.discard = true
		mxhttp.WriteError(w.ResponseWriter, mxhttp.ForStatus(code))
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *jsonErrorWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.discard {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps http.ServeContent's sendfile path for media downloads.
func (w *jsonErrorWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.discard {
		return io.Copy(io.Discard, src)
	}
	return io.Copy(w.ResponseWriter, src)
}

// Flush serves handlers that stream, which look for http.Flusher. A flush
// sends the header: a later status can no longer be rewritten.
func (w *jsonErrorWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *jsonErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// jsonErrorListener hands net/http connections that rewrite the answers
// it writes by itself before any handler runs — 400 for a malformed
// request, 431 for headers beyond MaxHeaderBytes, 501 and 505 — from plain
// text into Matrix errors. net/http writes each of those in one Write on
// the raw connection, in a fixed form (no Date header, unlike any answer
// of a handler), and then closes it. TLS listeners cannot use it: net/http
// must see their *tls.Conn to speak HTTP/2 and fill in r.TLS, and below
// the TLS layer the bytes are encrypted.
type jsonErrorListener struct{ net.Listener }

func (l jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrorConn{Conn: c}, nil
}

type jsonErrorConn struct{ net.Conn }

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	if out, ok := rewriteCannedError(p); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps the sendfile path of *net.TCPConn for response bodies
// (which net/http hands to ReadFrom, never a canned error).
func (c *jsonErrorConn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }

// cannedErrorHeaders is what net/http writes after the status line of the
// answers it gives by itself.
const cannedErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// rewriteCannedError returns the Matrix form of one of net/http's own
// plain-text error answers, or false when p is anything else.
func rewriteCannedError(p []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(p, []byte("HTTP/1.1 "))
	if !ok {
		return nil, false
	}
	statusLine, _, ok := bytes.Cut(rest, []byte(cannedErrorHeaders))
	if !ok || bytes.ContainsAny(statusLine, "\r\n") || len(statusLine) < 3 {
		return nil, false
	}
	status, err := strconv.Atoi(string(statusLine[:3]))
	if err != nil || status < 400 || status > 599 {
		return nil, false
	}
	body, err := json.Marshal(mxhttp.ForStatus(status))
	if err != nil {
		return nil, false
	}
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(status) + " " + http.StatusText(status))
	b.WriteString("\r\nContent-Type: application/json\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteString("\r\nConnection: close\r\n\r\n")
	b.Write(body)
	return b.Bytes(), true
}
