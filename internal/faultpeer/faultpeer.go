// Package faultpeer is a peer for fault-injection tests of the server's
// outbound clients: an HTTP server on a loopback port that can also hang,
// reset connections or answer garbage, the ways real peers fail below
// HTTP. Failures above it (500, 429, 413, bad bodies) are the handler's.
package faultpeer

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Mode is what the peer does with the next connections it accepts.
type Mode int32

const (
	// Serve answers with the handler.
	Serve Mode = iota
	// Hang accepts and then neither reads nor answers, until Release or
	// the end of the test.
	Hang
	// Reset closes at once with a TCP reset.
	Reset
	// Garbage answers bytes that are not HTTP (after the TLS handshake,
	// when the peer speaks TLS) and closes.
	Garbage
)

// Peer is a fault-injecting server. Keep-alives are off, so that every
// request arrives on a connection of its own and Accepted counts attempts.
type Peer struct {
	// Addr is the listener's "host:port"; URL is "http://" + Addr, or
	// "https://" when the peer speaks TLS.
	Addr, URL string

	tls      *tls.Config
	mode     atomic.Int32
	accepted atomic.Int64
	served   chan net.Conn
	done     chan struct{}

	mu      sync.Mutex
	hung    []net.Conn
	hanging int           // requests held by Fail(Hang)
	release chan struct{} // closed by Release
}

// New starts a peer serving h (in Serve mode) on a loopback port, over TLS
// when tlsConfig is not nil; it stops at the end of the test.
func New(t testing.TB, h http.Handler, tlsConfig *tls.Config) *Peer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Peer{Addr: l.Addr().String(), served: make(chan net.Conn), done: make(chan struct{}), release: make(chan struct{})}
	p.URL = "http://" + p.Addr
	if tlsConfig != nil {
		p.tls = tlsConfig.Clone()
		// HTTP/1.1 only: one request per connection, whatever the client
		// would prefer.
		p.tls.NextProtos = []string{"http/1.1"}
		p.URL = "https://" + p.Addr
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	srv.SetKeepAlivesEnabled(false)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = srv.Serve(chanListener{p, l.Addr()})
	}()
	go func() {
		defer wg.Done()
		p.accept(l)
	}()
	t.Cleanup(func() {
		close(p.done)
		l.Close()
		_ = srv.Close()
		p.Release()
		wg.Wait()
	})
	return p
}

// SetMode changes what the peer does with the connections it accepts from
// now on.
func (p *Peer) SetMode(m Mode) { p.mode.Store(int32(m)) }

// Accepted is the number of connections accepted so far.
func (p *Peer) Accepted() int64 { return p.accepted.Load() }

// Release closes the connections held by Hang and ends the requests held
// by Fail(Hang); the clients see them end without an answer.
func (p *Peer) Release() {
	p.mu.Lock()
	hung := p.hung
	p.hung = nil
	close(p.release)
	p.release = make(chan struct{})
	p.mu.Unlock()
	for _, c := range hung {
		c.Close()
	}
}

// Hung is the number of connections and requests held by Hang now.
func (p *Peer) Hung() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.hung) + p.hanging
}

// Fail makes a handler of the peer fail as m says, for the failures that
// only some requests should meet (one path, one attempt): Hang holds the
// request until the client gives up, Release or the end of the test and
// then drops the connection; Reset resets the connection; Garbage answers
// bytes that are not HTTP. Serve does nothing.
func (p *Peer) Fail(w http.ResponseWriter, r *http.Request, m Mode) {
	switch m {
	case Hang:
		p.mu.Lock()
		p.hanging++
		release := p.release
		p.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-release:
		case <-p.done:
		}
		p.mu.Lock()
		p.hanging--
		p.mu.Unlock()
		if c := hijack(w); c != nil {
			c.Close()
		}
	case Reset:
		if c := hijack(w); c != nil {
			if tc, ok := c.(*tls.Conn); ok {
				c = tc.NetConn()
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
		}
	case Garbage:
		if c := hijack(w); c != nil {
			_, _ = c.Write(garbage)
			c.Close()
		}
	}
}

func hijack(w http.ResponseWriter) net.Conn {
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil
	}
	return c
}

// garbage is what Garbage answers: not HTTP, not JSON.
var garbage = []byte("\x00\xffSSH-2.0-not-http\r\n\r\n{{{{")

func (p *Peer) accept(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		switch Mode(p.mode.Load()) {
		case Hang:
			p.mu.Lock()
			p.hung = append(p.hung, c)
			p.mu.Unlock()
		case Reset:
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
		case Garbage:
			go p.garbage(c)
		default:
			if p.tls != nil {
				c = tls.Server(c, p.tls)
			}
			select {
			case p.served <- c:
			case <-p.done:
				c.Close()
				return
			}
		}
	}
}

func (p *Peer) garbage(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if p.tls != nil {
		tc := tls.Server(c, p.tls)
		if tc.Handshake() != nil {
			return
		}
		c = tc
	}
	_, _ = c.Write(garbage)
}

// chanListener hands the connections accept chose to serve to the HTTP
// server.
type chanListener struct {
	p    *Peer
	addr net.Addr
}

func (l chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.p.served:
		return c, nil
	case <-l.p.done:
		return nil, net.ErrClosed
	}
}

func (l chanListener) Close() error { return nil }

func (l chanListener) Addr() net.Addr { return l.addr }

// Fault is one way a peer answers a request: well, or failing in one of
// the ways real peers fail.
type Fault int

// The faults.
const (
	// OK leaves the answer to the handler.
	OK Fault = iota
	Status500
	// Status429 asks to retry at once, as an overloaded peer might.
	Status429
	Status413
	// Redirect answers 302 to /elsewhere: a client that follows it GETs
	// a path the handler should count.
	Redirect
	// Garbage200 answers 200 with a body that is not JSON: the peer has
	// the request, whatever it says.
	Garbage200
	ResetConn
	GarbageConn
	HangConn
)

// Faults lists every fault but OK.
var Faults = []Fault{Status500, Status429, Status413, Redirect, Garbage200, ResetConn, GarbageConn, HangConn}

func (f Fault) String() string {
	return [...]string{"200", "500", "429", "413", "302", "200 with garbage", "reset", "garbage", "hang"}[f]
}

// Accepted reports whether the peer took the request: it answers 2xx.
func (f Fault) Accepted() bool { return f == OK || f == Garbage200 }

// Inject answers the request as f says and reports whether it did; for
// OK it does nothing and the handler answers.
func (p *Peer) Inject(w http.ResponseWriter, r *http.Request, f Fault) bool {
	switch f {
	case OK:
		return false
	case Garbage200:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(garbage)
	case Status500:
		w.WriteHeader(http.StatusInternalServerError)
	case Status429:
		w.Header().Set("Retry-After", "0")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":0}`))
	case Status413:
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	case Redirect:
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	case ResetConn:
		p.Fail(w, r, Reset)
	case GarbageConn:
		p.Fail(w, r, Garbage)
	case HangConn:
		p.Fail(w, r, Hang)
	}
	return true
}
