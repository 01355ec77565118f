package main

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// outputHelp documents, in --help, what each output format writes and how
// IDs are encoded in it.
const outputHelp = `Output (-o table, the default, or -o json):
  table  text for people. An ID is printed as it is when it is valid UTF-8
         of printable characters with no space and no leading double quote;
         any other ID is printed Go-quoted, as strconv.Quote writes it:
         "\xff\xfeabc" is five bytes, "a\nb" three.
  json   for scripts. The commands that answer per ID or stream (mark, get,
         forget, explain, scan, export) write JSON Lines, one object a line;
         the others (stats, compact, verify, repair, import, snapshot, bench)
         write one JSON document. An ID that is not valid UTF-8 is written in
         base64 (RFC 4648, padded) with "id_base64": true. The JSON of a
         command holds every field of its table, and scan's also the
         whole idempotency record.
  Errors go to stderr as text, with nothing on stdout, except that verify
  reports damage on stdout too. filter writes its input lines to stdout and
  its summary to stderr (as JSON with -o json); export always writes JSON
  Lines.`

// displayID returns id as tables print it, by the rule outputHelp states:
// as it is, or Go-quoted where it could be mistaken for another ID or
// break the table.
func displayID(id []byte) string {
	s := string(id)
	plain := len(s) > 0 && utf8.ValidString(s) && s[0] != '"' &&
		!strings.ContainsFunc(s, func(c rune) bool { return unicode.IsSpace(c) || !unicode.IsPrint(c) })
	if plain {
		return s
	}
	return strconv.Quote(s)
}
