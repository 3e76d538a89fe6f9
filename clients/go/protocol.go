package velocity

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"unicode/utf8"
)

// The Velocity wire protocol, version 1 (profile sections 1, 3 and 4), without any I/O.

// FrameType is the type byte of a frame.
type FrameType uint8

// Frame types.
const (
	TypeHello        FrameType = 0x01
	TypeServerInfo   FrameType = 0x02
	TypeAuthRequest  FrameType = 0x03
	TypeAuthResponse FrameType = 0x04
	TypeDisconnect   FrameType = 0x05
	TypeCommand      FrameType = 0x10
	TypeResponse     FrameType = 0x11
	TypeError        FrameType = 0x12
	TypePing         FrameType = 0x20
	TypePong         FrameType = 0x21
	TypeStats        FrameType = 0x22
)

func (t FrameType) known() bool {
	switch t {
	case TypeHello, TypeServerInfo, TypeAuthRequest, TypeAuthResponse, TypeDisconnect, TypeCommand,
		TypeResponse, TypeError, TypePing, TypePong, TypeStats:
		return true
	}
	return false
}

const (
	// ProtocolVersion is the version this client speaks.
	ProtocolVersion = 1
	headerBytes     = 10
	// FrameOverheadBytes: magic, version, type, length and checksum.
	FrameOverheadBytes = 14
	// PreauthPayloadBytesMax is the largest payload accepted before authentication.
	PreauthPayloadBytesMax = 4096
	// PayloadBytesCeiling is the largest max_payload a server may announce; a larger one is a
	// protocol error, so a hostile server cannot make the client buffer without bound.
	PayloadBytesCeiling = 64 << 20
	// PingPayloadBytesMax is the most a PING may carry.
	PingPayloadBytesMax = 64
	UsernameBytesMax    = 64
	PasswordBytesMax    = 128
	CredentialBytesMax  = 128
	// Bounds on the Argon2id cost a server may ask of the client (as the other clients).
	Argon2MKiBMax = 1 << 20
	Argon2TMax    = 16
	Argon2PMax    = 16

	methodPassword = 1
	methodAPIKey   = 2

	flagTLS          = 0x01
	flagAuthRequired = 0x02
)

var magic = [4]byte{'V', 'E', 'L', 'O'}

// EncodeFrame builds one frame: header, payload and CRC-32 (IEEE) of both.
func EncodeFrame(t FrameType, payload []byte) []byte {
	return appendFrame(make([]byte, 0, FrameOverheadBytes+len(payload)), t, payload)
}

func appendFrame(dst []byte, t FrameType, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, magic[:]...)
	dst = append(dst, ProtocolVersion, byte(t))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, payload...)
	return binary.LittleEndian.AppendUint32(dst, crc32.ChecksumIEEE(dst[start:]))
}

// appendCommand is appendFrame for a COMMAND, without copying the statement into a []byte first.
func appendCommand(dst []byte, sql string) []byte {
	start := len(dst)
	dst = append(dst, magic[:]...)
	dst = append(dst, ProtocolVersion, byte(TypeCommand))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(sql)))
	dst = append(dst, sql...)
	return binary.LittleEndian.AppendUint32(dst, crc32.ChecksumIEEE(dst[start:]))
}

// frameDecoder accumulates received bytes and hands out whole frames. An incomplete frame is
// not an error: next returns ok == false until more bytes arrive. The payload limit is checked
// from the header alone, before any payload is buffered.
type frameDecoder struct {
	buf []byte
	pos int
}

func (d *frameDecoder) feed(data []byte) {
	if d.pos > 0 && d.pos == len(d.buf) {
		d.buf = d.buf[:0]
		d.pos = 0
	} else if d.pos > 0 && d.pos >= len(d.buf)/2 {
		d.buf = d.buf[:copy(d.buf, d.buf[d.pos:])]
		d.pos = 0
	}
	d.buf = append(d.buf, data...)
}

func (d *frameDecoder) buffered() int { return len(d.buf) - d.pos }

// next returns the next whole frame; its payload is a copy that the caller owns.
func (d *frameDecoder) next(limit uint32) (t FrameType, payload []byte, ok bool, err error) {
	avail := d.buf[d.pos:]
	// What has arrived is checked as soon as it arrives: a wrong magic is known after 1 byte.
	n := len(avail)
	if n > 4 {
		n = 4
	}
	for i := 0; i < n; i++ {
		if avail[i] != magic[i] {
			return 0, nil, false, &FrameError{"bad_magic", "bad magic: not a Velocity server (is it TLS on one side only?)", true}
		}
	}
	if len(avail) < headerBytes {
		return 0, nil, false, nil
	}
	if avail[4] != ProtocolVersion {
		return 0, nil, false, &FrameError{"bad_version", fmt.Sprintf("unsupported protocol version %d", avail[4]), true}
	}
	t = FrameType(avail[5])
	length := binary.LittleEndian.Uint32(avail[6:10])
	if length > limit {
		return 0, nil, false, &FrameError{"too_long", fmt.Sprintf("frame of %d bytes exceeds the limit of %d", length, limit), true}
	}
	total := FrameOverheadBytes + int(length)
	if len(avail) < total {
		return 0, nil, false, nil
	}
	bodyEnd := headerBytes + int(length)
	if crc32.ChecksumIEEE(avail[:bodyEnd]) != binary.LittleEndian.Uint32(avail[bodyEnd:total]) {
		return 0, nil, false, &FrameError{"bad_checksum", "frame checksum mismatch", true}
	}
	payload = append([]byte(nil), avail[headerBytes:bodyEnd]...)
	d.pos += total
	if !t.known() {
		return t, nil, false, &FrameError{"unknown_type", fmt.Sprintf("unknown frame type 0x%02x", byte(t)), false}
	}
	return t, payload, true, nil
}

// reader reads primitive fields from a payload; any overrun is a malformed payload.
type reader struct {
	data []byte
	pos  int
	err  error
}

func malformed(msg string) *FrameError { return &FrameError{"malformed", msg, false} }

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.data)-r.pos {
		r.err = malformed("payload is shorter than its fields")
		return nil
	}
	out := r.data[r.pos : r.pos+n : r.pos+n]
	r.pos += n
	return out
}

func (r *reader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *reader) text(n int) string {
	b := r.take(n)
	if r.err == nil && !utf8.Valid(b) {
		r.err = malformed("text field is not UTF-8")
	}
	return string(b)
}

func (r *reader) str8() string  { return r.text(int(r.u8())) }
func (r *reader) str16() string { return r.text(int(r.u16())) }

func (r *reader) end() error {
	if r.err == nil && r.pos != len(r.data) {
		r.err = malformed(fmt.Sprintf("%d bytes after the last field", len(r.data)-r.pos))
	}
	return r.err
}

func appendStr8(dst []byte, s, what string) ([]byte, error) {
	if len(s) > 255 {
		return nil, protocolErrorf("%s is longer than 255 bytes", what)
	}
	return append(append(dst, byte(len(s))), s...), nil
}

func appendStr16(dst []byte, s string) []byte {
	if len(s) > 65535 {
		s = s[:65535]
	}
	return append(binary.LittleEndian.AppendUint16(dst, uint16(len(s))), s...)
}

func encodeHello(client string, versions []byte) ([]byte, error) {
	p := append([]byte{byte(len(versions))}, versions...)
	p, err := appendStr8(p, client, "client name")
	if err != nil {
		return nil, err
	}
	return EncodeFrame(TypeHello, p), nil
}

func encodeAuthRequest(method uint8, username string, credential []byte) ([]byte, error) {
	if len(credential) > 255 {
		return nil, protocolErrorf("credential is longer than 255 bytes")
	}
	p, err := appendStr8([]byte{method}, username, "user name")
	if err != nil {
		return nil, err
	}
	p = append(append(p, byte(len(credential))), credential...)
	return EncodeFrame(TypeAuthRequest, p), nil
}

func encodeCommand(sql string) []byte { return appendCommand(nil, sql) }

func encodePing(data []byte) []byte { return EncodeFrame(TypePing, data) }

func encodeStats() []byte { return EncodeFrame(TypeStats, nil) }

func encodeDisconnect(code uint16, reason string) []byte {
	return EncodeFrame(TypeDisconnect, appendStr16(binary.LittleEndian.AppendUint16(nil, code), reason))
}

// ServerInfo is the server's SERVER_INFO, its answer to HELLO.
type ServerInfo struct {
	Version     uint8
	Server      string   // e.g. "velocityd/0.1.0"
	Fingerprint [32]byte // SHA-256 of the server identity's SubjectPublicKeyInfo
	AuthSalt    [16]byte
	Argon2MKiB  uint32
	Argon2T     uint32
	Argon2P     uint8
	MaxPayload  uint32 // largest payload accepted after authentication
	Shards      uint16
	Flags       uint8
}

// TLS reports whether the server says it serves TLS.
func (i *ServerInfo) TLS() bool { return i.Flags&flagTLS != 0 }

// AuthRequired reports whether the server requires a login.
func (i *ServerInfo) AuthRequired() bool { return i.Flags&flagAuthRequired != 0 }

// FingerprintString is "SHA256:<base64 without padding>", as `velocityd fingerprint` prints it.
func (i *ServerInfo) FingerprintString() string { return FingerprintString(i.Fingerprint[:]) }

// FingerprintString formats a SHA-256 fingerprint as the known-hosts file and
// `velocityd fingerprint` do: "SHA256:" then unpadded standard base64.
func FingerprintString(fp []byte) string {
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(fp)
}

func parseServerInfo(payload []byte) (*ServerInfo, error) {
	r := &reader{data: payload}
	i := &ServerInfo{}
	i.Version = r.u8()
	i.Server = r.str8()
	copy(i.Fingerprint[:], r.take(32))
	copy(i.AuthSalt[:], r.take(16))
	i.Argon2MKiB = r.u32()
	i.Argon2T = r.u32()
	i.Argon2P = r.u8()
	i.MaxPayload = r.u32()
	i.Shards = r.u16()
	i.Flags = r.u8()
	if err := r.end(); err != nil {
		return nil, err
	}
	return i, nil
}

// parseCodeMessage reads ERROR, AUTH_RESPONSE and DISCONNECT: `u16 code; str16 text`.
func parseCodeMessage(payload []byte) (uint16, string, error) {
	r := &reader{data: payload}
	code, text := r.u16(), r.str16()
	if err := r.end(); err != nil {
		return 0, "", err
	}
	return code, text, nil
}

// Kind is the type of a Value.
type Kind uint8

// Value kinds, as the wire tags them.
const (
	Null  Kind = 0
	Bytes Kind = 1
	Int   Kind = 2
)

func (k Kind) String() string {
	switch k {
	case Null:
		return "NULL"
	case Bytes:
		return "BYTES"
	case Int:
		return "INT"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Value is one value of a result set: a byte string (keys and values), an integer (COUNT(*),
// ttl, numbers in SHOW STATS) or NULL (the ttl of a key without one).
type Value struct {
	Kind  Kind
	Bytes []byte // when Kind == Bytes
	Int   int64  // when Kind == Int
}

// BytesValue, IntValue and NullValue make Values (they can also be passed as parameters).
func BytesValue(b []byte) Value { return Value{Kind: Bytes, Bytes: b} }
func IntValue(i int64) Value    { return Value{Kind: Int, Int: i} }
func NullValue() Value          { return Value{} }

// IsNull reports whether the value is NULL.
func (v Value) IsNull() bool { return v.Kind == Null }

// Text is the value as text: bytes decoded as UTF-8 (as Go strings hold them, invalid
// sequences kept), an integer in decimal, NULL as "".
func (v Value) Text() string {
	switch v.Kind {
	case Bytes:
		return string(v.Bytes)
	case Int:
		return strconv.FormatInt(v.Int, 10)
	}
	return ""
}

// String is for printing: Text, except NULL prints as NULL.
func (v Value) String() string {
	if v.Kind == Null {
		return "NULL"
	}
	return v.Text()
}

// Equal compares kind and content.
func (v Value) Equal(o Value) bool {
	if v.Kind != o.Kind {
		return false
	}
	switch v.Kind {
	case Bytes:
		return string(v.Bytes) == string(o.Bytes)
	case Int:
		return v.Int == o.Int
	}
	return true
}

// Row is one row of a result set.
type Row []Value

// Strings is the row as text (Value.Text of each value).
func (r Row) Strings() []string {
	out := make([]string, len(r))
	for i, v := range r {
		out[i] = v.Text()
	}
	return out
}

// Result is a result set: column names, rows, and the rows written by INSERT/UPDATE/DELETE.
type Result struct {
	Columns  []string
	Rows     []Row
	Affected uint64
}

// Len is the number of rows.
func (r *Result) Len() int { return len(r.Rows) }

// Scalar is the single value of a one-row, one-column result (SELECT value ... WHERE key = ...,
// SELECT COUNT(*) ...).
func (r *Result) Scalar() (Value, error) {
	if len(r.Rows) != 1 || len(r.Columns) != 1 {
		return Value{}, usageErrorf("expected one value, got %d rows of %d columns", len(r.Rows), len(r.Columns))
	}
	return r.Rows[0][0], nil
}

// Text is every row as text (Value.Text of each value).
func (r *Result) Text() [][]string {
	out := make([][]string, len(r.Rows))
	for i, row := range r.Rows {
		out[i] = row.Strings()
	}
	return out
}

// Map turns (name, value) rows, such as SHOW STATS, SHOW STATUS and SELECT key, value, into a
// map from the first column's text to the second value.
func (r *Result) Map() map[string]Value {
	out := make(map[string]Value, len(r.Rows))
	for _, row := range r.Rows {
		if len(row) >= 2 {
			out[row[0].Text()] = row[1]
		}
	}
	return out
}

// Column is the index of the named column, or -1.
func (r *Result) Column(name string) int {
	for i, c := range r.Columns {
		if c == name {
			return i
		}
	}
	return -1
}

func parseResult(payload []byte) (*Result, error) {
	r := &reader{data: payload}
	nCols := int(r.u16())
	cols := make([]string, 0, nCols)
	for i := 0; i < nCols && r.err == nil; i++ {
		cols = append(cols, r.str16())
	}
	nRows := uint64(r.u32())
	if r.err != nil {
		return nil, r.err
	}
	// Each value takes at least one byte: a count beyond the payload is malformed, caught before
	// any allocation proportional to it.
	if (nCols == 0 && nRows != 0) || nRows*uint64(nCols) > uint64(len(payload)) {
		return nil, malformed("result set claims more values than its payload holds")
	}
	rows := make([]Row, 0, nRows)
	values := make([]Value, int(nRows)*nCols)
	for i := 0; i < int(nRows); i++ {
		row := Row(values[i*nCols : (i+1)*nCols : (i+1)*nCols])
		for j := range row {
			switch tag := r.u8(); tag {
			case 0:
			case 1:
				row[j] = Value{Kind: Bytes, Bytes: r.take(int(r.u32()))}
				if row[j].Bytes == nil && r.err == nil {
					row[j].Bytes = []byte{}
				}
			case 2:
				row[j] = Value{Kind: Int, Int: int64(r.u64())}
			default:
				if r.err == nil {
					r.err = malformed(fmt.Sprintf("unknown value tag %d", tag))
				}
			}
			if r.err != nil {
				return nil, r.err
			}
		}
		rows = append(rows, row)
	}
	affected := r.u64()
	if err := r.end(); err != nil {
		return nil, err
	}
	return &Result{Columns: cols, Rows: rows, Affected: affected}, nil
}
