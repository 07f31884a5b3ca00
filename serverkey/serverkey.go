// Package serverkey reads and writes the server's ed25519 signing key in
// Synapse's signing key file format, so that a key file can be moved between
// Synapse and this server unchanged.
//
// The file holds one key per line:
//
//	ed25519 <version> <unpadded standard base64 of the 32-byte seed>
package serverkey

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Algorithm is the only signing algorithm Matrix defines for server keys.
const Algorithm = "ed25519"

// Key is a server signing key.
type Key struct {
	// ID is the Matrix key ID, "ed25519:<version>".
	ID      string
	Private ed25519.PrivateKey
}

// Generate returns a new random key with a version of the form "a_XXXX",
// as Synapse generates them.
func Generate() (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("generating ed25519 key: %w", err)
	}
	suffix, err := randomAlnum(4)
	if err != nil {
		return Key{}, fmt.Errorf("generating key version: %w", err)
	}
	return Key{ID: Algorithm + ":a_" + suffix, Private: priv}, nil
}

// randomAlnum returns n characters drawn uniformly from [a-zA-Z0-9].
func randomAlnum(n int) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	// Bytes >= limit are rejected so that the modulo below is unbiased.
	const limit = 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

// Version returns the part of the key ID after "ed25519:".
func (k Key) Version() string {
	_, v, _ := strings.Cut(k.ID, ":")
	return v
}

// Public returns the public half of the key, or nil for an invalid key.
func (k Key) Public() ed25519.PublicKey {
	if len(k.Private) != ed25519.PrivateKeySize {
		return nil
	}
	return k.Private.Public().(ed25519.PublicKey)
}

// PublicBase64 returns the public key as unpadded standard base64, the
// encoding Matrix uses in server key responses.
func (k Key) PublicBase64() string {
	return base64.RawStdEncoding.EncodeToString(k.Public())
}

// validate checks that k can be written in a form Load will accept.
func (k Key) validate() error {
	alg, version, ok := strings.Cut(k.ID, ":")
	if !ok || alg != Algorithm {
		return fmt.Errorf("key ID %q: want %q", k.ID, Algorithm+":<version>")
	}
	if err := validVersion(version); err != nil {
		return fmt.Errorf("key ID %q: %w", k.ID, err)
	}
	if len(k.Private) != ed25519.PrivateKeySize {
		return fmt.Errorf("key %s: private key is %d bytes, want %d", k.ID, len(k.Private), ed25519.PrivateKeySize)
	}
	return nil
}

// validVersion enforces the character set the Matrix spec allows in key
// versions; anything else would break the key ID in JSON signatures.
func validVersion(v string) error {
	if v == "" {
		return errors.New("empty key version")
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("key version %q: only [a-zA-Z0-9_] allowed", v)
		}
	}
	return nil
}

// Load reads the first valid key from a Synapse-format key file. Blank lines
// and lines that do not parse are skipped as long as some later line holds a
// valid key; if none does, the error describes the first bad line.
func Load(path string) (Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("reading signing key: %w", err)
	}
	var firstErr error
	sc := bufio.NewScanner(bytes.NewReader(data))
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		k, err := parseLine(line)
		if err == nil {
			return k, nil
		}
		if firstErr == nil {
			firstErr = fmt.Errorf("signing key %s: line %d: %w", path, lineNo, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Key{}, fmt.Errorf("signing key %s: %w", path, err)
	}
	if firstErr != nil {
		return Key{}, firstErr
	}
	return Key{}, fmt.Errorf("signing key %s: no key found (want a line \"ed25519 <version> <base64 seed>\")", path)
}

func parseLine(line string) (Key, error) {
	fields := strings.Fields(line)
	if len(fields) != 3 {
		return Key{}, fmt.Errorf("malformed line: want \"ed25519 <version> <base64 seed>\", got %d fields", len(fields))
	}
	if fields[0] != Algorithm {
		return Key{}, fmt.Errorf("unsupported algorithm %q (want %s)", fields[0], Algorithm)
	}
	if err := validVersion(fields[1]); err != nil {
		return Key{}, err
	}
	// Synapse writes unpadded base64, but padded keys exist in the wild.
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
	if err != nil {
		return Key{}, fmt.Errorf("bad base64 in key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return Key{}, fmt.Errorf("key seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	return Key{ID: Algorithm + ":" + fields[1], Private: ed25519.NewKeyFromSeed(seed)}, nil
}

// Write stores k at path with mode 0600. It refuses to replace an existing
// file, because overwriting a signing key silently changes the server's
// identity towards every federated server.
func Write(path string, k Key) error {
	if err := k.validate(); err != nil {
		return fmt.Errorf("writing signing key %s: %w", path, err)
	}
	line := fmt.Sprintf("%s %s %s\n", Algorithm, k.Version(),
		base64.RawStdEncoding.EncodeToString(k.Private.Seed()))

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing signing key: %w", err)
	}
	_, err = f.WriteString(line)
	if err == nil {
		// The key must survive a crash right after first start.
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// Leave no truncated key behind: the next start would refuse it.
		_ = os.Remove(path)
		return fmt.Errorf("writing signing key %s: %w", path, err)
	}
	return nil
}

// LoadOrGenerate loads the key at path, or generates and writes a new one if
// the file does not exist. An existing but invalid file is an error rather
// than being replaced, since it may be a real key that got damaged.
func LoadOrGenerate(path string) (k Key, generated bool, err error) {
	k, err = Load(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Key{}, false, err
	}
	k, err = Generate()
	if err != nil {
		return Key{}, false, err
	}
	if err := Write(path, k); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process created it between our Load and Write; use theirs.
			k, err = Load(path)
			return k, false, err
		}
		return Key{}, false, err
	}
	return k, true, nil
}
