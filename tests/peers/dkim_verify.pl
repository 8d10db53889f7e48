#!/usr/bin/perl
# Independent DKIM verifier for tests (Mail::DKIM, no code shared with dkimpy).
# Usage: perl dkim_verify.pl DNS_HOST DNS_PORT < message-with-CRLF
# Prints one line per signature: "RESULT<TAB>DETAIL<TAB>d=DOMAIN<TAB>s=SELECTOR",
# or "none<TAB>no signatures" when the message has no DKIM-Signature.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS::Resolver;

my ($host, $port) = @ARGV;
die "usage: $0 DNS_HOST DNS_PORT\n" unless defined $port;

# Only our test resolver: never /etc/resolv.conf, which points off the machine.
my $resolver = Net::DNS::Resolver->new(
    nameservers => [$host],
    port        => $port,
    recurse     => 1,
    retry       => 1,
    udp_timeout => 3,
    tcp_timeout => 3,
);
Mail::DKIM::DNS::resolver($resolver);

my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    # The caller already sends CRLF; this keeps a stray bare LF from breaking canonicalisation.
    $line =~ s/\015?\012\z/\015\012/;
    $dkim->PRINT($line);
}
$dkim->CLOSE();

my @signatures = $dkim->signatures;
if (!@signatures) {
    print "none\tno signatures\n";
    exit 0;
}
foreach my $sig (@signatures) {
    my $detail = $sig->result_detail // '';
    $detail =~ s/[\t\r\n]+/ /g;
    printf "%s\t%s\td=%s\ts=%s\n", $sig->result, $detail, $sig->domain // '', $sig->selector // '';
}
