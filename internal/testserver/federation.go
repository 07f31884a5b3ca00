package testserver

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"homeserver/federation/transport"
	"homeserver/internal/fedtest"
	"homeserver/pdu"
	"homeserver/serverkey"
)

// Federation is several homeservers with distinct names that federate
// with each other over TLS (certificates of a test CA) on loopback, found
// through federation_host_overrides instead of DNS.
type Federation struct {
	t       testing.TB
	CA      *fedtest.CA
	Servers map[string]*Server
	// fedAddr is each server's federation listener address, kept across
	// restarts so that the others still find it.
	fedAddr map[string]string
}

// FederationBase is the configuration of a federating test server, with
// placeholders for its name and the shared parts.
const federationBase = `
server_name: %[1]s
public_baseurl: http://%[1]s/
listeners:
  - port: 8008
    type: http
    resources:
      - names: [client, media, metrics]
  - port: 8448
    type: http
    tls: true
    resources:
      - names: [federation]
tls_certificate_path: tls.crt
tls_private_key_path: tls.key
federation_custom_ca_list: [ca.pem]
ip_range_blacklist: []
` + SQLiteDatabase + `signing_key_path: signing.key
enable_metrics: true
federation:
  destination_min_retry_interval: 200ms
  destination_max_retry_interval: 2s
` + testSettings

// NewFederation starts one server per name (e.g. "hs1.test", "hs2.test"),
// each with extra YAML added to its configuration.
func NewFederation(t testing.TB, extra string, names ...string) *Federation {
	t.Helper()
	return NewFederationWith(t, FederationOptions{Extra: extra}, names...)
}

// FederationOptions adjust NewFederationWith.
type FederationOptions struct {
	// Extra is added to every server's configuration.
	Extra string
	// Peers are other servers (written with other code) the servers can
	// reach: name to "host:port".
	Peers map[string]string
	// CA signs the servers' certificates (a new one when nil); peers use
	// it too.
	CA *fedtest.CA
}

// NewFederationWith is NewFederation with options.
func NewFederationWith(t testing.TB, o FederationOptions, names ...string) *Federation {
	t.Helper()
	extra := o.Extra
	ca := o.CA
	if ca == nil {
		var err error
		if ca, err = fedtest.NewCA(); err != nil {
			t.Fatal(err)
		}
	}
	f := &Federation{t: t, CA: ca, Servers: map[string]*Server{}, fedAddr: map[string]string{}}
	listeners := map[string]net.Listener{}
	for _, name := range names {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners[name] = l
		f.fedAddr[name] = l.Addr().String()
	}
	var overrides strings.Builder
	overrides.WriteString("federation_host_overrides:\n")
	for _, name := range names {
		fmt.Fprintf(&overrides, "  %q: %q\n", name, f.fedAddr[name])
	}
	for name, addr := range o.Peers {
		fmt.Fprintf(&overrides, "  %q: %q\n", name, addr)
	}
	for _, name := range names {
		yaml := fmt.Sprintf(federationBase, name) + overrides.String() + extra
		if dsn := os.Getenv(PostgresEnv); dsn != "" {
			yaml = strings.Replace(yaml, SQLiteDatabase, PostgresDatabase(t, dsn), 1)
		}
		s := &Server{t: t, Dir: t.TempDir(), yaml: yaml, Client: newClient()}
		certPEM, keyPEM, err := ca.Certificate(name)
		if err != nil {
			t.Fatal(err)
		}
		for file, data := range map[string][]byte{"homeserver.yaml": []byte(yaml), "tls.crt": certPEM, "tls.key": keyPEM, "ca.pem": ca.PEM()} {
			if err := os.WriteFile(filepath.Join(s.Dir, file), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s.fedListener = listeners[name]
		s.fedAddr = f.fedAddr[name]
		s.start()
		t.Cleanup(s.Stop)
		f.Servers[name] = s
	}
	return f
}

// SigningKey is the server's signing key, for tests that speak federation
// as this server.
func (s *Server) SigningKey() pdu.Key {
	s.t.Helper()
	k, err := serverkey.Load(filepath.Join(s.Dir, "signing.key"))
	if err != nil {
		s.t.Fatal(err)
	}
	return pdu.Key{ServerName: s.Config.ServerName, KeyID: k.ID, Private: k.Private}
}

// FedDo sends a federation request to the server, signed with key as the
// X-Matrix scheme asks (or with the header given in auth, when not empty).
func (f *Federation) FedDo(to *Server, key pdu.Key, auth, method, path string, body any) *Response {
	f.t.Helper()
	var content []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		content = b
	case string:
		content = []byte(b)
	default:
		var err error
		if content, err = json.Marshal(b); err != nil {
			f.t.Fatal(err)
		}
	}
	if auth == "" {
		var err error
		signed := content
		if !json.Valid(signed) {
			signed = nil // not JSON: the signature cannot cover it
		}
		if auth, err = transport.SignRequest(key, method, path, to.Config.ServerName, signed); err != nil {
			f.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, "https://"+to.fedAddr+path, bytes.NewReader(content))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Host = to.Config.ServerName
	req.Header.Set("Authorization", auth)
	if content != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.CA.Pool(), ServerName: to.Config.ServerName}}}
	return send(f.t, client, req)
}

// FederationAddr is the "host:port" of the server's federation listener.
func (s *Server) FederationAddr() string { return s.fedAddr }
