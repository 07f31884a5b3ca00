package serverkey

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// seed is fixed so expected public keys are stable.
var seed = bytes.Repeat([]byte{7}, ed25519.SeedSize)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.signing.key")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGenerate(t *testing.T) {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^ed25519:a_[a-zA-Z0-9]{4}$`).MatchString(k.ID) {
		t.Errorf("ID = %q, want ed25519:a_XXXX", k.ID)
	}
	if len(k.Private) != ed25519.PrivateKeySize {
		t.Errorf("private key length = %d", len(k.Private))
	}
	sig := ed25519.Sign(k.Private, []byte("msg"))
	if !ed25519.Verify(k.Public(), []byte("msg"), sig) {
		t.Error("signature does not verify with Public()")
	}
	if got, want := k.PublicBase64(), base64.RawStdEncoding.EncodeToString(k.Public()); got != want || strings.HasSuffix(got, "=") {
		t.Errorf("PublicBase64 = %q, want unpadded %q", got, want)
	}
}

func TestWriteLoadRoundTrip(t *testing.T) {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "k.key")
	if err := Write(path, k); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %o, want 600", perm)
	}
	data, _ := os.ReadFile(path)
	want := "ed25519 " + k.Version() + " " + base64.RawStdEncoding.EncodeToString(k.Private.Seed()) + "\n"
	if string(data) != want {
		t.Errorf("file = %q, want %q", data, want)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || !got.Private.Equal(k.Private) {
		t.Errorf("Load = %v, want %v", got.ID, k.ID)
	}
}

func TestLoad(t *testing.T) {
	raw := base64.RawStdEncoding.EncodeToString(seed)
	padded := base64.StdEncoding.EncodeToString(seed)
	wantPub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	short := base64.RawStdEncoding.EncodeToString(seed[:16])

	tests := []struct {
		name    string
		content string
		wantID  string
		wantErr string
	}{
		{"synapse format", "ed25519 a_AbCd " + raw + "\n", "ed25519:a_AbCd", ""},
		{"no trailing newline", "ed25519 a_AbCd " + raw, "ed25519:a_AbCd", ""},
		{"padded base64", "ed25519 a_AbCd " + padded + "\n", "ed25519:a_AbCd", ""},
		{"blank lines and CRLF", "\n\r\n  \ned25519 auto " + raw + "\r\n", "ed25519:auto", ""},
		{"first valid line wins", "ed25519 first " + raw + "\ned25519 second " + raw + "\n", "ed25519:first", ""},
		{"bad line skipped before valid one", "garbage\ned25519 good " + raw + "\n", "ed25519:good", ""},
		{"empty file", "", "", "no key found"},
		{"only blank lines", "\n\n  \n", "", "no key found"},
		{"too few fields", "ed25519 " + raw + "\n", "", "line 1: malformed line"},
		{"too many fields", "ed25519 a b c\n", "", "line 1: malformed line"},
		{"wrong algorithm", "curve25519 a_AbCd " + raw + "\n", "", `unsupported algorithm "curve25519"`},
		{"bad version chars", "ed25519 a:b " + raw + "\n", "", `key version "a:b"`},
		{"bad base64", "ed25519 a_AbCd !!notbase64!!\n", "", "bad base64"},
		{"wrong length", "ed25519 a_AbCd " + short + "\n", "", "key seed is 16 bytes, want 32"},
		{"first error reported", "\nbogus line\ned25519 v !!\n", "", "line 2: malformed line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.content)
			k, err := Load(path)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Load succeeded with %q, want error containing %q", k.ID, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("error = %q, want it to contain %q and the path", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.ID != tt.wantID {
				t.Errorf("ID = %q, want %q", k.ID, tt.wantID)
			}
			if !k.Public().Equal(wantPub) {
				t.Error("public key mismatch")
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.key")
	_, err := Load(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want ErrNotExist naming %s", err, path)
	}
}

func TestWrite(t *testing.T) {
	good := Key{ID: "ed25519:a_1", Private: ed25519.NewKeyFromSeed(seed)}
	tests := []struct {
		name    string
		key     Key
		exists  bool
		wantErr string
	}{
		{"ok", good, false, ""},
		{"refuses overwrite", good, true, "file exists"},
		{"bad algorithm", Key{ID: "rsa:a_1", Private: good.Private}, false, `key ID "rsa:a_1"`},
		{"missing version", Key{ID: "ed25519:", Private: good.Private}, false, "empty key version"},
		{"no private key", Key{ID: "ed25519:a_1"}, false, "private key is 0 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k.key")
			const existing = "do not clobber\n"
			if tt.exists {
				if err := os.WriteFile(path, []byte(existing), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := Write(path, tt.key)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			data, readErr := os.ReadFile(path)
			switch {
			case tt.exists && string(data) != existing:
				t.Errorf("existing file changed to %q", data)
			case !tt.exists && !errors.Is(readErr, fs.ErrNotExist):
				t.Errorf("failed Write left a file behind")
			}
		})
	}
}

func TestLoadOrGenerate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.key")

	k1, generated, err := LoadOrGenerate(path)
	if err != nil || !generated {
		t.Fatalf("first call: generated=%v err=%v, want generated", generated, err)
	}
	k2, generated, err := LoadOrGenerate(path)
	if err != nil || generated {
		t.Fatalf("second call: generated=%v err=%v, want loaded", generated, err)
	}
	if k1.ID != k2.ID || !k1.Private.Equal(k2.Private) {
		t.Error("second call returned a different key")
	}

	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("corrupt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrGenerate(bad); err == nil || !strings.Contains(err.Error(), "malformed line") {
		t.Fatalf("invalid existing file: err = %v, want malformed line error", err)
	}
	if data, _ := os.ReadFile(bad); string(data) != "corrupt\n" {
		t.Error("invalid existing file was replaced")
	}

	if _, _, err := LoadOrGenerate(filepath.Join(dir, "no", "such", "dir", "k.key")); err == nil {
		t.Error("want error when the directory does not exist")
	}
}

func TestZeroKey(t *testing.T) {
	var k Key
	if k.Public() != nil || k.PublicBase64() != "" {
		t.Error("zero Key should have no public key")
	}
}
