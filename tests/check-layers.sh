#!/bin/bash
# tests/check-layers.sh [ROOT]: every #include "..." between the project's folders points down the
# layers README.md draws (section "How it is built"), bottom to top:
#
#   vmm/base/  the ground: includes nothing else of the tree
#   fdt/       device-tree writer
#   virtio/    virtqueues, transport, device models over their backend seams
#   iommu/     the IOMMU model and the virtio-iommu device
#   devices/   device backends and platform devices
#   vmm/       the roof (everything in vmm/ outside vmm/base/): may include anything below
#
# A file may include its own layer and any layer below it. tests/ stand outside the rule. An
# include the rule forbids fails the check (file:line, both layers), unless ALLOWED names it
# with the reason it is kept for now. ROOT defaults to the repository this script is in.
set -euo pipefail
ROOT=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"

# "FILE -> INCLUDED  reason", one per line: upward includes kept on purpose. Empty: none.
ALLOWED=''

# One perl process reads every file (a fork per include would take minutes on a busy machine).
find vmm fdt virtio iommu devices -type f \( -name '*.cpp' -o -name '*.hpp' \) 2>/dev/null | sort |
    ALLOWED=$ALLOWED perl -e '
use strict; use warnings;
my @names = ("vmm/base", "fdt", "virtio", "iommu", "devices", "vmm");
sub layer_of {  # its rank (0 = ground), or undef when outside the rule
    my ($p) = @_;
    return 0 if $p =~ m{^vmm/base/};
    return 1 if $p =~ m{^fdt/};
    return 2 if $p =~ m{^virtio/};
    return 3 if $p =~ m{^iommu/};
    return 4 if $p =~ m{^devices/};
    return 5 if $p =~ m{^vmm/};
    return undef;
}
my %allowed = map { (split /  /)[0] => 1 } grep { /\S/ } split /\n/, $ENV{ALLOWED};
my $problems = 0;
while (my $file = <STDIN>) {
    chomp $file;
    my $from = layer_of($file);
    next unless defined $from;
    open(my $h, "<", $file) or die "$file: $!";
    while (my $line = <$h>) {
        next unless $line =~ /^\s*#\s*include\s*"([^"]*)"/;
        my $included = $1;
        my $to = layer_of($included);
        next if !defined $to || $to <= $from || $allowed{"$file -> $included"};
        print "$file:$.: includes $included: $names[$from]/ may include only its own layer and those below ($names[$to]/ is above it)\n";
        $problems++;
    }
    close $h;
}
if ($problems) {
    print "check-layers: $problems include(s) point up the layers (see tests/check-layers.sh and README.md)\n";
    exit 1;
}
print "check-layers: every include points down the layers\n";
'
