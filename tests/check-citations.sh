#!/bin/bash
# tests/check-citations.sh [ROOT]: every citation in the tree leads somewhere a reader of the
# repository can follow. Fails (one line per problem, file:line) when a comment, test name, script or
# README
#   - cites a document that is not in the repository: "reference 1.5", "reference section 4.2",
#     "the reference's Appendix A", "architecture 6.7.5",
#     "Architecture doc", "architecture.md", "rig.md", "landscape", "../shared", "virtio-iommu-reference";
#   - cites an issue of a tracker the repository does not have: "issue 14", "Issue #5", "issues 4";
#   - uses a conformance ID (D17, G3, R2, or "CONFORMANCE.md L8") that tests/CONFORMANCE.md does not
#     define (D, G and R IDs anywhere in comments; L IDs where CONFORMANCE.md is named, since L1/L2
#     also name the rig's guest levels);
#   - names a file of ours (vmm/..., devices/..., virtio/..., iommu/..., fdt/..., tests/...,
#     guest-images/..., ending .hpp/.cpp/.sh/.md) that does not exist.
# ROOT defaults to the repository this script is in; its tracked files are checked (all files when
# ROOT is not a git work tree). Fuzz corpora are data, not text, and are skipped.
set -euo pipefail
ROOT=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    list() { git ls-files -co --exclude-standard; }
else
    list() { find . -type f ! -path './.git/*' | sed 's#^\./##'; }
fi
[ -f tests/CONFORMANCE.md ] || { echo "check-citations: tests/CONFORMANCE.md is missing" >&2; exit 1; }

list | grep -vE '^(tests/fuzz/corpus/|build/|guest-images/out/)' | perl -e '
use strict; use warnings;
my %defined;
open(my $c, "<", "tests/CONFORMANCE.md") or die;
while (<$c>) { $defined{$1} = 1 if /^\|\s*([DGL][0-9]+)\s*\|/; }
close $c;
my @files = map { chomp; $_ } <STDIN>;
my %exists = map { $_ => 1 } @files;
my $problems = 0;
sub problem { my ($f, $n, $what) = @_; print "$f:$n: $what\n"; $problems++; }
my $id = qr/[DGLR][0-9]{1,3}/;
my $range = qr/($id)(?:\s?[-\x{2013}]\s?([DGLR])?([0-9]{1,3}))?/;
sub ids_of {  # "D41-D59" -> D41..D59
    my ($text) = @_; my @out;
    while ($text =~ /(?<![\w.\/-])$range(?![\w])/g) {
        my ($first, $last) = ($1, $3);
        my ($kind, $from) = $first =~ /^(.)(\d+)$/;
        if (defined $last && $last >= $from && $last - $from < 100) { push @out, "$kind$_" for $from .. $last; }
        else { push @out, $first; }
    }
    return @out;
}
for my $f (@files) {
    next if $f eq "tests/CONFORMANCE.md" || $f eq "tests/check-citations.sh" || $f eq "tests/check-citations.test.sh";
    next unless -f $f && -T $f;
    my $cxx = $f =~ /\.(cpp|hpp)$/;
    my $doc = $f =~ /\.md$/;
    open(my $h, "<", $f) or next;
    my $n = 0;
    my $carry = "";  # "reference" at the end of the previous line: its section may open this one
    while (my $line = <$h>) {
        $n++;
        # The text a reader follows: comments and test names in C++, comments in scripts, all of a README.
        my $text;
        if ($cxx) {
            my @parts;
            push @parts, $1 if $line =~ m{//(.*)$};
            push @parts, $1 while $line =~ /\b(?:TEST_CASE|SUBCASE)\("([^"]*)"/g;
            unless (@parts) { $carry = ""; next; }
            $text = join(" ", @parts);
        } elsif ($doc) {
            $text = $line;
        } else {
            unless ($line =~ /(?:^|\s)#(.*)$/) { $carry = ""; next; }
            $text = $1;
        }
        my $joined = $carry . $text;
        $carry = $text =~ /(\b[Rr]eference(?:\x27s)?(?:\s+sections?)?)\s*$/ ? "$1 " : "";
        problem($f, $n, "cites a document outside the repository: \"$1\"")
            if $joined =~ /(\b[Rr]eference(?:\x27s)?\s+(?:(?:sections?|\xc2\xa7)\s*[0-9]+(?:\.[0-9]+)*|[Aa]ppendix\s+[A-Z]\b|[0-9]+(?:\.[0-9]+)*)|\b[Aa]rchitecture(?: doc)? [0-9]+(?:\.[0-9]+)*|\b[Aa]rchitecture doc\b|architecture\.md|rig\.md|\blandscape\b|\.\.\/shared|\/work\/shared|virtio-iommu-reference)/;
        problem($f, $n, "cites a tracker the repository does not have: \"$1\"; say what it means instead")
            if $joined =~ /(\b[Ii]ssues?\s*#?[0-9]+)/;
        # Conformance IDs.
        my $scan = $text;
        $scan =~ s/\bRIG-L[0-9]\S*//g;
        for my $i (ids_of($scan)) {
            next if $i =~ /^L/;  # only where CONFORMANCE.md is named, below
            problem($f, $n, "conformance ID $i is not defined in tests/CONFORMANCE.md") unless $defined{$i};
        }
        while ($text =~ /CONFORMANCE\.md((?:[ ,]+(?:and\s+)?$range)+)/g) {
            for my $i (ids_of($1)) {
                problem($f, $n, "conformance ID $i is not defined in tests/CONFORMANCE.md") unless $defined{$i};
            }
        }
        # Paths of our own files.
        while ($text =~ m#(?<![\w./-])((?:vmm|devices|virtio|iommu|fdt|tests|guest-images)/[\w./-]*\.(?:hpp|cpp|sh|md))(?![\w\x7b])#g) {
            my $p = $1;
            next if $p =~ m#(?:^|/)[A-Z]+(?:[./]|$)#;  # a placeholder (tests/rig/X.test.sh)
            next if $exists{$p} || -e $p;
            problem($f, $n, "names $p, which is not in the tree");
        }
    }
    close $h;
}
if ($problems) { print "check-citations: $problems citation(s) lead nowhere (see tests/check-citations.sh)\n"; exit 1; }
print "check-citations: every citation resolves (" . scalar(keys %defined) . " conformance IDs defined)\n";
'
