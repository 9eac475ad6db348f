// Package bustest makes the credentials that tests of NATS authentication
// need, for every method a Breakwater command supports: an nkey user seed,
// an operator, account and user JWTs with a .creds file, and a CA with a
// server and a client certificate. Everything is generated in a test's
// temporary directory; nothing is read from or written to the machine's
// own NATS setup.
package bustest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// NKeyUser is an nkey user: the server trusts Public, the client signs with
// the seed in SeedFile.
type NKeyUser struct {
	Public   string
	SeedFile string
}

// NewNKeyUser makes an nkey user and writes its seed to a file.
func NewNKeyUser(t testing.TB) NKeyUser {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return NKeyUser{Public: pub, SeedFile: writeFile(t, "user.nk", seed)}
}

// Operator is a decentralised-auth setup: an operator, a system account and
// one account with JetStream enabled, and a user of that account whose
// .creds file is CredsFile.
type Operator struct {
	Claims      *jwt.OperatorClaims
	JWT         string // the operator JWT
	SystemPub   string // the system account's public key
	SystemJWT   string
	AccountPub  string
	AccountJWT  string
	CredsFile   string // a user of the account
	accountKeys nkeys.KeyPair
}

// NewOperator makes an operator, its accounts and one user.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	okp := must(t, nkeys.CreateOperator)
	opub := must(t, okp.PublicKey)
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "breakwater-test"

	sys := must(t, nkeys.CreateAccount)
	sysPub := must(t, sys.PublicKey)
	oc.SystemAccount = sysPub
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}

	akp := must(t, nkeys.CreateAccount)
	apub := must(t, akp.PublicKey)
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "APP"
	// Without JetStream limits an operator-mode account has no JetStream.
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	o := &Operator{Claims: oc, JWT: ojwt, SystemPub: sysPub, SystemJWT: sysJWT,
		AccountPub: apub, AccountJWT: ajwt, accountKeys: akp}
	o.CredsFile = o.NewUserCreds(t, "app-user")
	return o
}

// NewUserCreds signs a new user of the account and writes its .creds file.
func (o *Operator) NewUserCreds(t testing.TB, name string) string {
	t.Helper()
	ukp := must(t, nkeys.CreateUser)
	upub := must(t, ukp.PublicKey)
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	ujwt, err := uc.Encode(o.accountKeys)
	if err != nil {
		t.Fatal(err)
	}
	seed := must(t, ukp.Seed)
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, name+".creds", creds)
}

// TLS names the PEM files of a CA, a server certificate for 127.0.0.1, ::1
// and localhost, and a client certificate, all signed by the CA.
type TLS struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	// OtherCA is a CA that signed none of them: trusting only it fails.
	OtherCA string
}

// NewTLS generates the CA and the certificates.
func NewTLS(t testing.TB) TLS {
	t.Helper()
	caKey, caCert, caPEM := newCA(t, "breakwater test CA")
	_, _, otherPEM := newCA(t, "some other CA")
	var out TLS
	out.CA = writeFile(t, "ca.pem", caPEM)
	out.OtherCA = writeFile(t, "other-ca.pem", otherPEM)

	serverTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	out.ServerCert, out.ServerKey = newLeaf(t, "server", serverTmpl, caCert, caKey)
	clientTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "breakwater-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	out.ClientCert, out.ClientKey = newLeaf(t, "client", clientTmpl, caCert, caKey)
	return out
}

func newCA(t testing.TB, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func newLeaf(t testing.TB, name string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, name+"-cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile = writeFile(t, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writeFile writes data to name in a fresh temporary directory, readable
// by the owner only (seeds and keys are secrets).
func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func must[T any](t testing.TB, fn func() (T, error)) T {
	t.Helper()
	v, err := fn()
	if err != nil {
		t.Fatal(err)
	}
	return v
}
