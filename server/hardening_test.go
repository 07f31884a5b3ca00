package server_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"homeserver/config"
	"homeserver/internal/testserver"
	"homeserver/server"
)

// serveWith serves the client API of s on a new listener with timeouts t.
func serveWith(t *testing.T, s *testserver.Server, to server.Timeouts) string {
	t.Helper()
	s.Srv.SetTimeouts(to)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lc := config.Listener{Type: "http", Resources: []config.Resource{{Names: []string{"client", "media"}}}}
	if err := s.Srv.Serve(l, lc); err != nil {
		t.Fatal(err)
	}
	return l.Addr().String()
}

// rawRequest writes raw to a new connection and returns what the server
// answers until it closes the connection. The generous deadline only keeps
// a broken server from hanging the test.
func rawRequest(t *testing.T, addr, raw string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func matrixError(t *testing.T, resp *http.Response) string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("status %d answered as %q, not JSON", resp.StatusCode, ct)
	}
	var e struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Errcode == "" {
		t.Fatalf("status %d: not a Matrix error (%v)", resp.StatusCode, err)
	}
	return e.Errcode
}

// A client that sends its headers, then trickles its body (or never sends
// it), is cut off once the body's deadline passes, and so is one that never
// finishes its headers.
func TestSlowRequestsTimedOut(t *testing.T) {
	s := testserver.Start(t, "")
	addr := serveWith(t, s, server.Timeouts{Header: time.Second, Body: time.Second, Upload: time.Second, Idle: time.Minute})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "PUT /_matrix/client/v3/profile/@a:test/displayname HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	// The body never completes: the server must give up on it and close
	// the connection, not wait for ever.
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("a trickled body held the connection: %v", err)
	}

	h, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	_, _ = io.WriteString(h, "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n")
	_ = h.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.Copy(io.Discard, h); err != nil {
		t.Fatalf("unfinished headers held the connection: %v", err)
	}
}

// The body deadline never cuts a long-poll short: /sync without a body
// waits for its whole timeout, past the body deadline.
func TestLongPollOutlivesBodyDeadline(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	addr := serveWith(t, s, server.Timeouts{Header: time.Second, Body: 200 * time.Millisecond, Upload: time.Second, Idle: time.Minute})
	first := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync", alice.Token, nil)
	since := first.String("next_batch")
	const poll = 1500 * time.Millisecond
	req, _ := http.NewRequest("GET", "http://"+addr+"/_matrix/client/v3/sync?set_presence=offline&timeout=1500&since="+url.QueryEscape(since), nil)
	req.Header.Set("Authorization", "Bearer "+alice.Token)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("long-poll: %d", resp.StatusCode)
	}
	// A cancelled long-poll answers early; one left alone waits its
	// timeout out.
	if d := time.Since(start); d < poll {
		t.Fatalf("the long-poll was cut short after %v (timeout %v)", d, poll)
	}
}

// net/http's own answers to requests it cannot parse are Matrix errors.
func TestTransportErrorsAreJSON(t *testing.T) {
	s := testserver.Start(t, "")
	addr := strings.TrimPrefix(s.URL, "http://")

	resp := rawRequest(t, addr, "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 128<<10)+"\r\n\r\n")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized headers: %d", resp.StatusCode)
	}
	if code := matrixError(t, resp); code != "M_TOO_LARGE" {
		t.Fatalf("oversized headers: %s", code)
	}

	resp = rawRequest(t, addr, "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed header: %d", resp.StatusCode)
	}
	if code := matrixError(t, resp); code != "M_UNRECOGNIZED" {
		t.Fatalf("malformed header: %s", code)
	}

	resp = rawRequest(t, addr, "GET /_matrix/client/versions HTTP/1.1\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("missing Host: %d", resp.StatusCode)
	}
	matrixError(t, resp)
}

// An unsatisfiable range on a media download is a Matrix error, with the
// Content-Range RFC 9110 asks for.
func TestUnsatisfiableRangeIsJSON(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	up := s.MustDo(http.StatusOK, "POST", "/_matrix/media/v3/upload", alice.Token, "hello, world")
	mxc := strings.TrimPrefix(up.String("content_uri"), "mxc://")
	req, _ := http.NewRequest("GET", s.URL+"/_matrix/client/v1/media/download/"+mxc, nil)
	req.Header.Set("Authorization", "Bearer "+alice.Token)
	req.Header.Set("Range", "bytes=1000-2000")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d", resp.StatusCode)
	}
	if cr := resp.Header.Get("Content-Range"); cr != "bytes */12" {
		t.Fatalf("Content-Range: %q", cr)
	}
	matrixError(t, resp)
}

// Invalid UTF-8 in a JSON body is M_NOT_JSON: encoding/json would have
// stored U+FFFD in its place.
func TestInvalidUTF8IsNotJSON(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	r := s.Do("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.ID)+"/displayname", alice.Token, []byte("{\"displayname\":\"a\xffb\"}"))
	if r.Status != http.StatusBadRequest || r.Errcode() != "M_NOT_JSON" {
		t.Fatalf("invalid UTF-8: %d %s", r.Status, r.Body)
	}
}
