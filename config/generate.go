package config

import (
	"bytes"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"text/template"

	"homeserver/serverkey"
)

//go:embed generated.yaml.tmpl
var generatedTemplate string

// GenerateOptions says what Generate writes.
type GenerateOptions struct {
	ServerName string
	ConfigPath string
	// EnableRegistration writes enable_registration: true together with
	// enable_registration_without_verification: true.
	EnableRegistration bool
	// Port is the client/federation listener's port; 0 means 8008.
	Port int
}

// Generate writes a complete, commented configuration for opts.ServerName to
// opts.ConfigPath, and a signing key next to it unless one is already there.
// It refuses to overwrite an existing configuration file. The file holds a
// fresh registration_shared_secret, so it is created with mode 0600.
func Generate(opts GenerateOptions) error {
	if err := validateServerName(opts.ServerName); err != nil {
		return fmt.Errorf("generating config: server name %q: %w", opts.ServerName, err)
	}
	if opts.ConfigPath == "" {
		return errors.New("generating config: no config file path given")
	}
	port := opts.Port
	if port == 0 {
		port = 8008
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("generating config: port must be between 1 and 65535, got %d", port)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("generating config: registration secret: %w", err)
	}
	keyFile := opts.ServerName + ".signing.key"

	tmpl, err := template.New("config").
		Funcs(template.FuncMap{"quote": strconv.Quote}).
		Parse(generatedTemplate)
	if err != nil {
		return fmt.Errorf("generating config: parsing template: %w", err)
	}
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, struct {
		ServerName               string
		SigningKeyPath           string
		RegistrationSharedSecret string
		Port                     int
		EnableRegistration       bool
	}{
		ServerName:               opts.ServerName,
		SigningKeyPath:           keyFile,
		RegistrationSharedSecret: base64.RawURLEncoding.EncodeToString(secret),
		Port:                     port,
		EnableRegistration:       opts.EnableRegistration,
	})
	if err != nil {
		return fmt.Errorf("generating config: %w", err)
	}
	// Catch template mistakes here rather than at the admin's next start.
	_, warnings, err := Parse(buf.Bytes(), opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("generating config: generated file does not load: %w", err)
	}
	if len(warnings) > 0 {
		return fmt.Errorf("generating config: generated file has warnings: %q", warnings)
	}

	// O_EXCL first, so that an existing config is refused before a key is
	// generated for it.
	f, err := os.OpenFile(opts.ConfigPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("generating config: %w", err)
	}
	_, _, err = serverkey.LoadOrGenerate(filepath.Join(filepath.Dir(opts.ConfigPath), keyFile))
	if err == nil {
		_, err = f.Write(buf.Bytes())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// A half-written config would block the next attempt (O_EXCL), so
		// leave nothing behind.
		_ = os.Remove(opts.ConfigPath)
		return fmt.Errorf("generating config: %w", err)
	}
	return nil
}
