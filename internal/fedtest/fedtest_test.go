package fedtest_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"homeserver/internal/fedtest"
)

func TestCertificateVerifies(t *testing.T) {
	ca, err := fedtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Certificate("hs1.test:8448", "127.0.0.1", "[::1]", "other.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.PEM()) {
		t.Fatal("PEM() not parsable")
	}
	tests := []struct {
		name string
		ok   bool
	}{
		{"hs1.test", true},
		{"other.test", true},
		{"127.0.0.1", true},
		{"::1", true},
		{"hs2.test", false},
		{"127.0.0.2", false},
	}
	for _, tt := range tests {
		for _, p := range []*x509.CertPool{pool, ca.Pool()} {
			_, err := leaf.Verify(x509.VerifyOptions{DNSName: tt.name, Roots: p})
			if (err == nil) != tt.ok {
				t.Errorf("%s: verify err = %v, want ok %v", tt.name, err, tt.ok)
			}
		}
	}
	other, _ := fedtest.NewCA()
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "hs1.test", Roots: other.Pool()}); err == nil {
		t.Error("verified against another CA")
	}
	if _, _, err := ca.Certificate(); err == nil {
		t.Error("certificate without names issued")
	}
}

func TestTLSServer(t *testing.T) {
	ca, err := fedtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.TLSCertificate("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.StartTLS()
	defer s.Close()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	resp, err := c.Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != "ok" {
		t.Errorf("body %q", b)
	}
}
