package server_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"homeserver/config"
	"homeserver/internal/testserver"
)

// A listener of type metrics serves Prometheus text with request, database
// and runtime metrics.
func TestMetricsListener(t *testing.T) {
	s := testserver.Start(t, "enable_metrics: true\n")
	s.Register("alice", "pw")
	s.MustDo(http.StatusOK, "GET", "/_matrix/client/versions", "", nil)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Srv.Serve(l, config.Listener{Type: "metrics"}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/_synapse/metrics", "/metrics"} {
		var body []byte
		// The readers report once they have run: with PostgreSQL, after
		// taking their lease, which may come a moment after start-up.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			resp, err := http.Get("http://" + l.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: status %d", path, resp.StatusCode)
			}
			if strings.Contains(string(body), `reader="push:evaluator"`) || time.Now().After(deadline) {
				break
			}
		}
		for _, want := range []string{
			`homeserver_http_requests_total{endpoint="/_matrix/client/versions",method="GET",status="200"} 1`,
			`homeserver_http_requests_total{endpoint="/_matrix/client/v3/register",method="POST",status="401"} 1`,
			`homeserver_http_request_duration_seconds_bucket`,
			`homeserver_db_query_duration_seconds_bucket{op="create_account"`,
			`go_sql_open_connections{db_name="writer"}`,
			// Every durable reader is in one family.
			`homeserver_reader_position{reader="push:evaluator"}`,
			`homeserver_reader_consecutive_failures{reader="push:evaluator"} 0`,
			`go_goroutines`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("%s lacks %s", path, want)
			}
		}
	}
	// The metrics listener serves nothing else.
	resp, err := http.Get("http://" + l.Addr().String() + "/_matrix/client/versions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("client API on the metrics listener: %d", resp.StatusCode)
	}
}

// Unknown paths and methods are Matrix errors; OPTIONS is answered with CORS
// headers without running the endpoint.
func TestRouting(t *testing.T) {
	s := testserver.Start(t, "")
	r := s.Do("GET", "/_matrix/client/v3/nonexistent", "", nil)
	if r.Status != 404 || r.Errcode() != "M_UNRECOGNIZED" {
		t.Fatalf("unknown path: %d %s", r.Status, r.Body)
	}
	r = s.Do("DELETE", "/_matrix/client/versions", "", nil)
	if r.Status != 405 || r.Errcode() != "M_UNRECOGNIZED" {
		t.Fatalf("wrong method: %d %s", r.Status, r.Body)
	}
	if allow := r.Header.Get("Allow"); allow != "GET, OPTIONS" {
		t.Fatalf("Allow: %q", allow)
	}
	r = s.Do("PATCH", "/_matrix/client/v3/devices/ABC", "", nil)
	if r.Status != 405 || r.Header.Get("Allow") != "GET, PUT, DELETE, OPTIONS" {
		t.Fatalf("PATCH on a device: %d, Allow %q", r.Status, r.Header.Get("Allow"))
	}
	r = s.Do("OPTIONS", "/_matrix/client/v3/register", "", nil)
	if r.Status != 200 || r.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("OPTIONS: %d %v", r.Status, r.Header)
	}
	// OPTIONS ran no registration logic: no UIA session was handed out.
	if r.String("session") != "" {
		t.Fatalf("OPTIONS ran the endpoint: %s", r.Body)
	}
	if s.Do("GET", "/health", "", nil).Status != 200 {
		t.Fatal("health check failed")
	}
}
