package velocity

import (
	"encoding/hex"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Quote gives a SQL literal for v that parses back to exactly v and can never change the shape
// of the statement it is placed in:
//
//   - string and []byte: text in quotes with ' doubled when it is valid UTF-8 made of printable
//     characters (letters, marks, numbers, punctuation, symbols and the ASCII space, as Python's
//     str.isprintable and Go's unicode.IsPrint define them); anything else, control characters
//     and newlines included, as X'hex';
//   - integers of any Go integer type: decimal; negative ones are refused (the dialect has
//     unsigned integer literals only);
//   - nil: NULL;
//   - a Value: as its kind says;
//   - named types whose underlying type is one of these (type Key string): as that type.
//
// Any other type (bool, floats, ...) is refused with an error matching ErrUsage.
func Quote(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "NULL", nil
	case string:
		return quoteText(x), nil
	case []byte:
		return quoteText(string(x)), nil
	case Value:
		switch x.Kind {
		case Null:
			return "NULL", nil
		case Bytes:
			return quoteText(string(x.Bytes)), nil
		case Int:
			return quoteSigned(x.Int)
		}
		return "", usageErrorf("cannot quote a value of kind %v", x.Kind)
	case int:
		return quoteSigned(int64(x))
	case int8:
		return quoteSigned(int64(x))
	case int16:
		return quoteSigned(int64(x))
	case int32:
		return quoteSigned(int64(x))
	case int64:
		return quoteSigned(x)
	case uint:
		return strconv.FormatUint(uint64(x), 10), nil
	case uint8:
		return strconv.FormatUint(uint64(x), 10), nil
	case uint16:
		return strconv.FormatUint(uint64(x), 10), nil
	case uint32:
		return strconv.FormatUint(uint64(x), 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case bool:
		return "", usageErrorf("cannot quote a bool; pass an integer, string or []byte")
	}
	// Named types over the same kinds (type Key string, type ID uint32, ...).
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String:
		return quoteText(rv.String()), nil
	case reflect.Slice:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return quoteText(string(rv.Bytes())), nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return quoteSigned(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.FormatUint(rv.Uint(), 10), nil
	}
	return "", usageErrorf("cannot quote a %T; pass an integer, string, []byte, Value or nil", v)
}

func quoteSigned(i int64) (string, error) {
	if i < 0 {
		return "", usageErrorf("the dialect has unsigned integer literals only (got %d)", i)
	}
	return strconv.FormatInt(i, 10), nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func quoteText(s string) string {
	if printable(s) {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return "X'" + hex.EncodeToString([]byte(s)) + "'"
}

// Bind replaces each ? outside a quoted literal with Quote of the next argument. The number of
// arguments must match the number of placeholders.
func Bind(sql string, args ...any) (string, error) {
	var out strings.Builder
	out.Grow(len(sql) + 16*len(args))
	used := 0
	inQuote := false
	// ' and ? are ASCII: byte by byte is character by character for them in UTF-8.
	for i := 0; i < len(sql); i++ {
		ch := sql[i]
		switch {
		case ch == '\'':
			inQuote = !inQuote
			out.WriteByte(ch)
		case ch == '?' && !inQuote:
			if used >= len(args) {
				return "", usageErrorf("more ? placeholders than parameters")
			}
			lit, err := Quote(args[used])
			if err != nil {
				return "", err
			}
			out.WriteString(lit)
			used++
		default:
			out.WriteByte(ch)
		}
	}
	if used != len(args) {
		return "", usageErrorf("%d parameters for %d ? placeholders", len(args), used)
	}
	return out.String(), nil
}
