package velocity

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The language-neutral vectors in tests/vectors/frames.json, byte for byte.

type vectorFile struct {
	Frames []struct {
		Name      string         `json:"name"`
		Direction string         `json:"direction"`
		Type      string         `json:"type"`
		Message   map[string]any `json:"message"`
		Hex       string         `json:"hex"`
	} `json:"frames"`
	Invalid []struct {
		Name  string `json:"name"`
		Hex   string `json:"hex"`
		Limit uint32 `json:"limit"`
		Error string `json:"error"`
		Close bool   `json:"close"`
	} `json:"invalid"`
	Incomplete []struct {
		Name string `json:"name"`
		Hex  string `json:"hex"`
	} `json:"incomplete"`
	Credential struct {
		AuthSaltHex   string `json:"auth_salt_hex"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		Argon2MKiB    uint32 `json:"argon2_m_kib"`
		Argon2T       uint32 `json:"argon2_t"`
		Argon2P       uint8  `json:"argon2_p"`
		SaltHex       string `json:"salt_hex"`
		CredentialHex string `json:"credential_hex"`
		StoredHex     string `json:"stored_hex"`
	} `json:"credential"`
}

var frameTypes = map[string]FrameType{
	"HELLO": TypeHello, "SERVER_INFO": TypeServerInfo, "AUTH_REQUEST": TypeAuthRequest,
	"AUTH_RESPONSE": TypeAuthResponse, "DISCONNECT": TypeDisconnect, "COMMAND": TypeCommand,
	"RESPONSE": TypeResponse, "ERROR": TypeError, "PING": TypePing, "PONG": TypePong, "STATS": TypeStats,
}

func loadVectors(t *testing.T) *vectorFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "tests", "vectors", "frames.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Frames) == 0 || len(v.Invalid) == 0 || len(v.Incomplete) == 0 {
		t.Fatal("vector file has no vectors")
	}
	return &v
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func num(m map[string]any, k string) int64 { return int64(m[k].(float64)) }

func vectorValue(t *testing.T, v map[string]any) Value {
	t.Helper()
	switch {
	case v["null"] != nil:
		return Value{}
	case v["int"] != nil:
		return IntValue(int64(v["int"].(float64)))
	default:
		return BytesValue(unhex(t, v["bytes_hex"].(string)))
	}
}

func encodeClient(t *testing.T, typ string, m map[string]any) []byte {
	t.Helper()
	var out []byte
	var err error
	switch typ {
	case "PING":
		out = encodePing(unhex(t, m["payload_hex"].(string)))
	case "HELLO":
		var versions []byte
		for _, v := range m["versions"].([]any) {
			versions = append(versions, byte(v.(float64)))
		}
		out, err = encodeHello(m["client"].(string), versions)
	case "COMMAND":
		out = encodeCommand(m["sql"].(string))
	case "AUTH_REQUEST":
		out, err = encodeAuthRequest(uint8(num(m, "method")), m["username"].(string), unhex(t, m["credential_hex"].(string)))
	case "DISCONNECT":
		out = encodeDisconnect(uint16(num(m, "code")), m["reason"].(string))
	case "STATS":
		out = encodeStats()
	default:
		t.Fatalf("no encoder for %s", typ)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVectorClientFramesEncodeByteForByte(t *testing.T) {
	n := 0
	for _, f := range loadVectors(t).Frames {
		if f.Direction != "client" {
			continue
		}
		n++
		t.Run(f.Name, func(t *testing.T) {
			if got := hex.EncodeToString(encodeClient(t, f.Type, f.Message)); got != f.Hex {
				t.Fatalf("encoded\n %s\nwant\n %s", got, f.Hex)
			}
		})
	}
	if n == 0 {
		t.Fatal("no client frames")
	}
}

func TestVectorServerFramesDecode(t *testing.T) {
	for _, f := range loadVectors(t).Frames {
		if f.Direction != "server" {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			var d frameDecoder
			d.feed(unhex(t, f.Hex))
			typ, payload, ok, err := d.next(1 << 20)
			if err != nil || !ok {
				t.Fatalf("decode: ok=%v err=%v", ok, err)
			}
			if typ != frameTypes[f.Type] {
				t.Fatalf("type 0x%02x, want %s", byte(typ), f.Type)
			}
			if d.buffered() != 0 {
				t.Fatalf("%d bytes left over", d.buffered())
			}
			m := f.Message
			switch f.Type {
			case "RESPONSE", "STATS":
				r, err := parseResult(payload)
				if err != nil {
					t.Fatal(err)
				}
				var cols []string
				for _, c := range m["columns"].([]any) {
					cols = append(cols, c.(string))
				}
				if len(cols) != len(r.Columns) || (len(cols) > 0 && !reflect.DeepEqual(cols, r.Columns)) {
					t.Fatalf("columns %q, want %q", r.Columns, cols)
				}
				rows := m["rows"].([]any)
				if len(rows) != len(r.Rows) {
					t.Fatalf("%d rows, want %d", len(r.Rows), len(rows))
				}
				for i, row := range rows {
					for j, v := range row.([]any) {
						want := vectorValue(t, v.(map[string]any))
						if !r.Rows[i][j].Equal(want) {
							t.Fatalf("row %d col %d: %v (%v), want %v (%v)", i, j, r.Rows[i][j], r.Rows[i][j].Kind, want, want.Kind)
						}
					}
				}
				if r.Affected != uint64(num(m, "affected")) {
					t.Fatalf("affected %d", r.Affected)
				}
			case "ERROR":
				code, msg, err := parseCodeMessage(payload)
				if err != nil || int64(code) != num(m, "code") || msg != m["message"] {
					t.Fatalf("%d %q %v", code, msg, err)
				}
				e := errorFor(code, msg)
				if int64(e.Code) != num(m, "code") || e.Message != m["message"] {
					t.Fatalf("errorFor: %+v", e)
				}
				if !errors.Is(e, Code(code)) {
					t.Fatalf("%v does not match its code", e)
				}
			case "AUTH_RESPONSE":
				code, msg, err := parseCodeMessage(payload)
				if err != nil || int64(code) != num(m, "status") || msg != m["message"] {
					t.Fatalf("%d %q %v", code, msg, err)
				}
			case "DISCONNECT":
				code, msg, err := parseCodeMessage(payload)
				if err != nil || int64(code) != num(m, "code") || msg != m["reason"] {
					t.Fatalf("%d %q %v", code, msg, err)
				}
			case "PONG":
				if hex.EncodeToString(payload) != m["payload_hex"] {
					t.Fatalf("payload %x", payload)
				}
			case "SERVER_INFO":
				i, err := parseServerInfo(payload)
				if err != nil {
					t.Fatal(err)
				}
				got := []any{int64(i.Version), i.Server, hex.EncodeToString(i.Fingerprint[:]), hex.EncodeToString(i.AuthSalt[:]),
					int64(i.Argon2MKiB), int64(i.Argon2T), int64(i.Argon2P), int64(i.MaxPayload), int64(i.Shards), int64(i.Flags)}
				want := []any{num(m, "version"), m["server"], m["fingerprint_hex"], m["auth_salt_hex"],
					num(m, "argon2_m_kib"), num(m, "argon2_t"), num(m, "argon2_p"), num(m, "max_payload"), num(m, "shards"), num(m, "flags")}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%v\nwant %v", got, want)
				}
				if !i.TLS() || !i.AuthRequired() {
					t.Fatal("flags 3 means TLS and authentication required")
				}
			default:
				t.Fatalf("unexpected type %s", f.Type)
			}
		})
	}
}

func TestVectorFramesSplitAtEveryByteAreIncompleteNotErrors(t *testing.T) {
	for _, f := range loadVectors(t).Frames {
		raw := unhex(t, f.Hex)
		var d frameDecoder
		for i := 0; i < len(raw)-1; i++ {
			d.feed(raw[i : i+1])
			if _, _, ok, err := d.next(1 << 20); ok || err != nil {
				t.Fatalf("%s at byte %d: ok=%v err=%v", f.Name, i, ok, err)
			}
		}
		d.feed(raw[len(raw)-1:])
		if _, _, ok, err := d.next(1 << 20); !ok || err != nil {
			t.Fatalf("%s complete: ok=%v err=%v", f.Name, ok, err)
		}
	}
}

func TestVectorIncomplete(t *testing.T) {
	for _, f := range loadVectors(t).Incomplete {
		t.Run(f.Name, func(t *testing.T) {
			var d frameDecoder
			d.feed(unhex(t, f.Hex))
			if _, _, ok, err := d.next(PreauthPayloadBytesMax); ok || err != nil {
				t.Fatalf("ok=%v err=%v", ok, err)
			}
		})
	}
}

// Framing violations are the same on either side; payload rules for frames a client never
// receives (HELLO, COMMAND, PING, a RESPONSE sent to a server) are the server's concern.
func TestVectorInvalidFrames(t *testing.T) {
	framing := map[string]bool{"bad_magic": true, "bad_version": true, "too_long": true, "bad_checksum": true, "unknown_type": true}
	n := 0
	for _, f := range loadVectors(t).Invalid {
		if !framing[f.Error] {
			continue
		}
		n++
		t.Run(f.Name, func(t *testing.T) {
			var d frameDecoder
			d.feed(unhex(t, f.Hex))
			_, _, ok, err := d.next(f.Limit)
			var fe *FrameError
			if ok || !errors.As(err, &fe) {
				t.Fatalf("ok=%v err=%v", ok, err)
			}
			if fe.Kind != f.Error || fe.Fatal != f.Close || fe.Code() != CodeProtocolError || !errors.Is(err, ErrProtocolError) {
				t.Fatalf("%+v, want kind %s close %v", fe, f.Error, f.Close)
			}
			if c, ok := CodeOf(err); !ok || c != 6 {
				t.Fatalf("CodeOf: %v %v", c, ok)
			}
		})
	}
	if n != 7 {
		t.Fatalf("%d framing vectors, want 7", n)
	}
}

func TestTruncatedAndOversizedResultSetsAreMalformed(t *testing.T) {
	v := loadVectors(t)
	raw := unhex(t, v.Frames[4].Hex)
	payload := raw[10 : len(raw)-4]
	r, err := parseResult(payload)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := r.Scalar(); err != nil || s.Text() != "alice" || s.Kind != Bytes {
		t.Fatalf("scalar %v %v", s, err)
	}
	for cut := 0; cut < len(payload); cut++ {
		_, err := parseResult(payload[:cut])
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Kind != "malformed" || fe.Fatal {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	// A row count far beyond the payload is refused before anything is allocated for it.
	if _, err := parseResult(unhex(t, "01000100"+"76"+"ffffffff")); !errors.Is(err, ErrProtocolError) {
		t.Fatalf("huge row count: %v", err)
	}
	if _, err := parseResult(unhex(t, "0000"+"01000000"+"0000000000000000")); !errors.Is(err, ErrProtocolError) {
		t.Fatalf("rows without columns: %v", err)
	}
	if _, err := parseResult(unhex(t, "0100"+"0100"+"76"+"01000000"+"07"+"0000000000000000")); !errors.Is(err, ErrProtocolError) {
		t.Fatalf("unknown tag: %v", err)
	}
}

func TestCredentialVector(t *testing.T) {
	c := loadVectors(t).Credential
	info := &ServerInfo{Argon2MKiB: c.Argon2MKiB, Argon2T: c.Argon2T, Argon2P: c.Argon2P}
	copy(info.AuthSalt[:], unhex(t, c.AuthSaltHex))
	salt := sha256.Sum256(append(info.AuthSalt[:], c.Username...))
	if hex.EncodeToString(salt[:16]) != c.SaltHex {
		t.Fatalf("salt %x", salt[:16])
	}
	cred, err := DeriveCredential(info, c.Username, c.Password)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(cred) != c.CredentialHex {
		t.Fatalf("credential %x", cred)
	}
	stored := sha256.Sum256(cred)
	if hex.EncodeToString(stored[:]) != c.StoredHex {
		t.Fatalf("stored %x", stored)
	}
}

func TestHostileArgon2ParametersAreRefused(t *testing.T) {
	for _, info := range []ServerInfo{
		{Argon2MKiB: 1 << 30, Argon2T: 2, Argon2P: 1},
		{Argon2MKiB: 19456, Argon2T: 17, Argon2P: 1},
		{Argon2MKiB: 19456, Argon2T: 2, Argon2P: 17},
		{Argon2MKiB: 0, Argon2T: 2, Argon2P: 1},
	} {
		info := info
		if _, err := DeriveCredential(&info, "alice", "pw"); !errors.Is(err, ErrProtocolError) {
			t.Fatalf("%+v: %v", info, err)
		}
	}
	ok := ServerInfo{Argon2MKiB: 8, Argon2T: 1, Argon2P: 1}
	if _, err := DeriveCredential(&ok, strings.Repeat("u", 65), "pw"); !errors.Is(err, ErrUsage) {
		t.Fatalf("long user: %v", err)
	}
	if _, err := DeriveCredential(&ok, "u", strings.Repeat("p", 129)); !errors.Is(err, ErrUsage) {
		t.Fatalf("long password: %v", err)
	}
}

type (
	namedString string
	namedBytes  []byte
	namedInt    int16
	namedUint   uint8
	namedBool   bool
)

func TestQuoteAndBind(t *testing.T) {
	cases := []struct {
		in   any
		want string
	}{
		{"it's", "'it''s'"},
		{[]byte{0, 0xff}, "X'00ff'"},
		{"line\nbreak", "X'" + hex.EncodeToString([]byte("line\nbreak")) + "'"},
		{"tab\there", "X'" + hex.EncodeToString([]byte("tab\there")) + "'"},
		{"", "''"},
		{"ключ ✓", "'ключ ✓'"},
		{"\u00a0nbsp", "X'c2a06e627370'"}, // as Python's isprintable: a non-ASCII space is not printable
		{"zero\u200bwidth", "X'" + hex.EncodeToString([]byte("zero\u200bwidth")) + "'"},
		{[]byte("caf\xc3"), "X'636166c3'"},
		{42, "42"},
		{uint64(1 << 63), "9223372036854775808"},
		{int8(7), "7"},
		{0, "0"},
		{nil, "NULL"},
		{IntValue(5), "5"},
		{BytesValue([]byte("v")), "'v'"},
		{NullValue(), "NULL"},
		{namedString("it's"), "'it''s'"},
		{namedBytes{0}, "X'00'"},
		{namedInt(9), "9"},
		{namedUint(10), "10"},
	}
	for _, c := range cases {
		got, err := Quote(c.in)
		if err != nil || got != c.want {
			t.Errorf("Quote(%#v) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []any{1.5, true, -1, int64(-5), IntValue(-1), struct{}{}, []string{"a"}, namedInt(-1), namedBool(true), Value{Kind: 9}} {
		if _, err := Quote(bad); !errors.Is(err, ErrUsage) {
			t.Errorf("Quote(%#v): %v, want a usage error", bad, err)
		}
	}
	got, err := Bind("SELECT value FROM kv WHERE key = ? AND key <> '?'", "a'b")
	if err != nil || got != "SELECT value FROM kv WHERE key = 'a''b' AND key <> '?'" {
		t.Fatalf("%q %v", got, err)
	}
	got, err = Bind("INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", "k", []byte{1}, 60)
	if err != nil || got != "INSERT INTO kv (key, value, ttl) VALUES ('k', X'01', 60)" {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := Bind("SELECT ?"); !errors.Is(err, ErrUsage) {
		t.Fatal(err)
	}
	if _, err := Bind("SELECT ?", 1, 2); !errors.Is(err, ErrUsage) {
		t.Fatal(err)
	}
}

func TestFingerprintStringMatchesTheRustFormat(t *testing.T) {
	if got := FingerprintString(make([]byte, 32)); got != "SHA256:"+strings.Repeat("A", 43) {
		t.Fatal(got)
	}
}

func TestErrorCodesAndNames(t *testing.T) {
	sentinels := []error{ErrInvalidCredentials, ErrRateLimited, ErrInvalidCommand, ErrKeyNotFound, ErrStorageError,
		ErrProtocolError, ErrServerOverloaded, ErrUnauthorized, ErrOutcomeUnknown}
	names := []string{"INVALID_CREDENTIALS", "RATE_LIMITED", "INVALID_COMMAND", "KEY_NOT_FOUND", "STORAGE_ERROR",
		"PROTOCOL_ERROR", "SERVER_OVERLOADED", "UNAUTHORIZED", "OUTCOME_UNKNOWN"}
	for i := range sentinels {
		code := uint16(i + 1)
		e := errorFor(code, "m")
		for j, other := range sentinels {
			if errors.Is(e, other) != (i == j) {
				t.Fatalf("code %d vs %v: %v", code, other, errors.Is(e, other))
			}
		}
		if e.Code.String() != names[i] || !strings.Contains(e.Error(), names[i]) {
			t.Fatalf("%d: %s / %s", code, e.Code, e)
		}
		if c, ok := CodeOf(e); !ok || uint16(c) != code {
			t.Fatal(c, ok)
		}
	}
	if got := errorFor(4, "key not found").Error(); got != "velocity: KEY_NOT_FOUND: key not found" {
		t.Fatal(got)
	}
	unknown := errorFor(0x99, "from the future")
	if unknown.Code.Known() || !strings.Contains(unknown.Error(), "0x0099") {
		t.Fatal(unknown)
	}
	for _, s := range sentinels {
		if errors.Is(unknown, s) {
			t.Fatal(s)
		}
	}
}

// 0x0009 OUTCOME_UNKNOWN (an extension for cluster nodes: a write that may or may not have been
// applied) is a known code with a sentinel of its own, and no other.
func TestOutcomeUnknownCode(t *testing.T) {
	if CodeOutcomeUnknown != 0x0009 || !CodeOutcomeUnknown.Known() || CodeOutcomeUnknown.String() != "OUTCOME_UNKNOWN" {
		t.Fatalf("%d %v %s", uint16(CodeOutcomeUnknown), CodeOutcomeUnknown.Known(), CodeOutcomeUnknown)
	}
	e := errorFor(0x0009, "leader lost midway")
	if !errors.Is(e, ErrOutcomeUnknown) || e.Code != CodeOutcomeUnknown {
		t.Fatal(e)
	}
	if got := e.Error(); got != "velocity: OUTCOME_UNKNOWN: leader lost midway" {
		t.Fatal(got)
	}
	if got := ErrOutcomeUnknown.Error(); got != "velocity: OUTCOME_UNKNOWN" {
		t.Fatal(got)
	}
	wrapped := fmt.Errorf("exec: %w", e)
	if c, ok := CodeOf(wrapped); !ok || c != CodeOutcomeUnknown || !errors.Is(wrapped, ErrOutcomeUnknown) {
		t.Fatal(c, ok)
	}
	for _, other := range []error{ErrStorageError, ErrUnauthorized, ErrKeyNotFound} {
		if errors.Is(e, other) {
			t.Fatal(other)
		}
	}
}

func TestResultHelpers(t *testing.T) {
	r := &Result{Columns: []string{"name", "value"}, Rows: []Row{
		{BytesValue([]byte("keys")), IntValue(3)},
		{BytesValue([]byte("tls")), BytesValue([]byte("off"))},
		{BytesValue([]byte("ttl")), NullValue()},
	}}
	m := r.Map()
	if m["keys"].Int != 3 || m["tls"].Text() != "off" || !m["ttl"].IsNull() {
		t.Fatal(m)
	}
	if !reflect.DeepEqual(r.Text(), [][]string{{"keys", "3"}, {"tls", "off"}, {"ttl", ""}}) {
		t.Fatal(r.Text())
	}
	if r.Column("value") != 1 || r.Column("nope") != -1 || r.Len() != 3 {
		t.Fatal("Column/Len")
	}
	if _, err := r.Scalar(); !errors.Is(err, ErrUsage) {
		t.Fatal(err)
	}
	if NullValue().String() != "NULL" || IntValue(-1).String() != "-1" {
		t.Fatal("String")
	}
}

func TestKnownHostsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".velocity", "known_hosts")
	o := &Options{KnownHosts: path}
	fp := "SHA256:" + strings.Repeat("B", 43)
	if err := checkTrust(o, "h:1", fp); !errors.Is(err, ErrTrust) || !strings.Contains(err.Error(), "unknown server h:1") {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused host was recorded")
	}
	o.AcceptNewHost = true
	if err := checkTrust(o, "h:1", fp); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Dir(path))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("~/.velocity made with %v (%v)", st.Mode(), err)
	}
	// Comments, CRLF and other hosts are read as the other clients read them.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("# h:2 SHA256:comment\r\n[::1]:7411 SHA256:six\r\n")
	f.Close()
	if got, _ := LookupKnownHost(path, "[::1]:7411"); got != "SHA256:six" {
		t.Fatal(got)
	}
	if got, _ := LookupKnownHost(path, "h:2"); got != "" {
		t.Fatal(got)
	}
	if HostLabel("::1", 7411) != "[::1]:7411" || HostLabel("db", 1) != "db:1" {
		t.Fatal("HostLabel")
	}
	// A changed key is refused whatever AcceptNewHost says, and the file is left alone.
	before, _ := os.ReadFile(path)
	err = checkTrust(o, "h:1", "SHA256:"+strings.Repeat("C", 43))
	if !errors.Is(err, ErrTrust) || !strings.Contains(err.Error(), "HAS CHANGED") || !strings.Contains(err.Error(), fp) {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Fatal("the file changed")
	}
	t.Setenv("HOME", dir)
	if DefaultKnownHosts() != path {
		t.Fatal(DefaultKnownHosts())
	}
}
