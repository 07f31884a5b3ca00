package config

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"homeserver/serverkey"
)

func TestGenerate(t *testing.T) {
	tests := []struct {
		name     string
		opts     GenerateOptions
		wantPort int
	}{
		{"defaults", GenerateOptions{ServerName: "example.org"}, 8008},
		{"open registration and port", GenerateOptions{ServerName: "example.org", EnableRegistration: true, Port: 8448}, 8448},
		{"server name with port", GenerateOptions{ServerName: "matrix.example.org:8448"}, 8008},
		{"IPv6 server name", GenerateOptions{ServerName: "[::1]:8448"}, 8008},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.opts.ConfigPath = filepath.Join(dir, "homeserver.yaml")
			if err := Generate(tt.opts); err != nil {
				t.Fatal(err)
			}

			c, warnings, err := Load(tt.opts.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if len(warnings) != 0 {
				t.Errorf("warnings: %q", warnings)
			}
			if c.ServerName != tt.opts.ServerName {
				t.Errorf("ServerName = %q", c.ServerName)
			}
			if c.EnableRegistration != tt.opts.EnableRegistration || c.EnableRegistrationWithoutVerification != tt.opts.EnableRegistration {
				t.Errorf("registration = %v/%v, want %v", c.EnableRegistration, c.EnableRegistrationWithoutVerification, tt.opts.EnableRegistration)
			}
			wantListeners := []Listener{{
				Port:          tt.wantPort,
				BindAddresses: []string{"127.0.0.1"},
				Type:          "http",
				Resources:     []Resource{{Names: []string{"client", "federation", "media"}}},
			}}
			if !reflect.DeepEqual(c.Listeners, wantListeners) {
				t.Errorf("Listeners = %+v", c.Listeners)
			}
			if !c.DatabaseIsSQLite() || c.Database.Args.Database != filepath.Join(dir, "homeserver.db") {
				t.Errorf("Database = %+v", c.Database)
			}
			if c.MediaStorePath != filepath.Join(dir, "media_store") {
				t.Errorf("MediaStorePath = %q", c.MediaStorePath)
			}
			if secret, err := base64.RawURLEncoding.DecodeString(c.RegistrationSharedSecret); err != nil || len(secret) != 32 {
				t.Errorf("registration_shared_secret %q: %d bytes, err %v; want 32 random bytes", c.RegistrationSharedSecret, len(secret), err)
			}

			wantKey := filepath.Join(dir, tt.opts.ServerName+".signing.key")
			if c.SigningKeyPath != wantKey {
				t.Errorf("SigningKeyPath = %q, want %q", c.SigningKeyPath, wantKey)
			}
			if _, err := serverkey.Load(wantKey); err != nil {
				t.Errorf("signing key: %v", err)
			}

			// Paths are written relative, so the directory can be moved.
			data, err := os.ReadFile(tt.opts.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(data), dir) {
				t.Error("generated config contains an absolute path")
			}
			if fi, err := os.Stat(tt.opts.ConfigPath); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("config file mode = %v, %v; want 0600 (it holds a secret)", fi.Mode().Perm(), err)
			}
		})
	}
}

func TestGenerateSecretsDiffer(t *testing.T) {
	var secrets []string
	for range 2 {
		path := filepath.Join(t.TempDir(), "homeserver.yaml")
		if err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path}); err != nil {
			t.Fatal(err)
		}
		c, _, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, c.RegistrationSharedSecret)
	}
	if secrets[0] == secrets[1] {
		t.Error("two generated configs share a registration_shared_secret")
	}
}

func TestGenerateRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "homeserver.yaml")
	const existing = "# mine\n"
	if err := os.WriteFile(path, []byte(existing), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path})
	if err == nil || !strings.Contains(err.Error(), "file exists") {
		t.Fatalf("err = %v, want file exists", err)
	}
	if data, _ := os.ReadFile(path); string(data) != existing {
		t.Error("existing config was modified")
	}
	if _, err := os.Stat(filepath.Join(dir, "example.org.signing.key")); !os.IsNotExist(err) {
		t.Error("a signing key was generated for a config that was not written")
	}
}

func TestGenerateKeepsExistingKey(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "example.org.signing.key")
	k, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := serverkey.Write(keyPath, k); err != nil {
		t.Fatal(err)
	}
	if err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: filepath.Join(dir, "homeserver.yaml")}); err != nil {
		t.Fatal(err)
	}
	got, err := serverkey.Load(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || !got.Private.Equal(k.Private) {
		t.Error("existing signing key was replaced")
	}
}

func TestGenerateErrors(t *testing.T) {
	dir := t.TempDir()
	badKeyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(badKeyDir, "example.org.signing.key"), []byte("junk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts GenerateOptions
		want string
	}{
		{"bad server name", GenerateOptions{ServerName: "not/valid", ConfigPath: filepath.Join(dir, "a.yaml")}, `server name "not/valid"`},
		{"empty server name", GenerateOptions{ConfigPath: filepath.Join(dir, "b.yaml")}, "empty host name"},
		{"no path", GenerateOptions{ServerName: "example.org"}, "no config file path"},
		{"bad port", GenerateOptions{ServerName: "example.org", ConfigPath: filepath.Join(dir, "c.yaml"), Port: 70000}, "port must be between 1 and 65535"},
		{"missing directory", GenerateOptions{ServerName: "example.org", ConfigPath: filepath.Join(dir, "no", "such", "d.yaml")}, "no such file"},
		{"invalid existing key", GenerateOptions{ServerName: "example.org", ConfigPath: filepath.Join(badKeyDir, "e.yaml")}, "malformed line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Generate(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if tt.opts.ConfigPath != "" {
				if _, err := os.Stat(tt.opts.ConfigPath); !os.IsNotExist(err) {
					t.Error("a config file was left behind")
				}
			}
		})
	}
}

// TestEveryKeyDocumented checks that both the sample homeserver.yaml and the
// generated config mention every key Config understands, set or commented
// out, so that adding a field without documenting it fails here.
func TestEveryKeyDocumented(t *testing.T) {
	sample, err := os.ReadFile("../homeserver.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "homeserver.yaml")
	if err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path}); err != nil {
		t.Fatal(err)
	}
	generated, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	var topLevel, nested []string
	var collect func(t reflect.Type, top bool)
	collect = func(typ reflect.Type, top bool) {
		for name, i := range yamlFields(typ) {
			if top {
				topLevel = append(topLevel, name)
			} else {
				nested = append(nested, name)
			}
			ft := typ.Field(i).Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				collect(ft, false)
			}
		}
	}
	collect(reflect.TypeFor[Config](), true)

	for file, text := range map[string]string{"homeserver.yaml": string(sample), "generated": string(generated)} {
		for _, key := range topLevel {
			if !regexp.MustCompile(`(?m)^#?` + regexp.QuoteMeta(key) + `:`).MatchString(text) {
				t.Errorf("%s: top-level key %s is not documented", file, key)
			}
		}
		for _, key := range nested {
			if !regexp.MustCompile(`\b` + regexp.QuoteMeta(key) + `\b`).MatchString(text) {
				t.Errorf("%s: key %s is not documented", file, key)
			}
		}
	}
}
