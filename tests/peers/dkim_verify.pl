#!/usr/bin/perl
# Independent DKIM verifier for tests (Mail::DKIM, no code shared with dkimpy).
# Usage: perl dkim_verify.pl DNS_HOST DNS_PORT < message-with-CRLF
#        perl dkim_verify.pl DNS_HOST DNS_PORT FILE...  (several messages, one start-up)
# Prints one line per signature:
#   "RESULT<TAB>DETAIL<TAB>d=DOMAIN<TAB>s=SELECTOR<TAB>a=ALGORITHM",
# or "none<TAB>no signatures" when the message has no DKIM-Signature. With FILEs, each
# line starts with the file's position among them (0, 1, ...) and a TAB.
#
# Ed25519 (RFC 8463): Mail::DKIM verifies ed25519-sha256 itself from 1.20230630 on.
# Older releases (Debian 12 ships 1.20230212) reject it as "unsupported algorithm"; for
# those, the Ed25519SHA256 packages below teach Mail::DKIM the algorithm and key type:
# Mail::DKIM still parses, canonicalises and hashes the message and fetches the key,
# and CryptX (libcryptx-perl, libtomcrypt underneath) checks the Ed25519 signature.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS::Resolver;

my ($host, $port, @files) = @ARGV;
die "usage: $0 DNS_HOST DNS_PORT [FILE...]\n" unless defined $port;

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

Ed25519SHA256::install()
  unless eval { require Mail::DKIM::Algorithm::ed25519_sha256; 1 };

if (!@files) {
    print verify(\*STDIN, '');
    exit 0;
}
for my $index (0 .. $#files) {
    open(my $fh, '<', $files[$index]) or die "$files[$index]: $!\n";
    print verify($fh, "$index\t");
    close($fh);
}

# One message from $fh: its result lines, each starting with $prefix.
sub verify {
    my ($fh, $prefix) = @_;
    my $dkim = Mail::DKIM::Verifier->new();
    binmode $fh;
    while (my $line = <$fh>) {
        # The caller already sends CRLF; this keeps a stray bare LF from breaking
        # canonicalisation.
        $line =~ s/\015?\012\z/\015\012/;
        $dkim->PRINT($line);
    }
    $dkim->CLOSE();
    my @signatures = $dkim->signatures;
    return "${prefix}none\tno signatures\n" unless @signatures;
    my $out = '';
    foreach my $sig (@signatures) {
        my $detail = $sig->result_detail // '';
        $detail =~ s/[\t\r\n]+/ /g;
        $out .= sprintf "%s%s\t%s\td=%s\ts=%s\ta=%s\n", $prefix, $sig->result, $detail,
          $sig->domain // '', $sig->selector // '', $sig->algorithm // '';
    }
    return $out;
}

# ---------------------------------------------------------------------------------------
# ed25519-sha256 for Mail::DKIM releases without it (see the top of this file).

package Ed25519SHA256::Key;

# What Mail::DKIM keeps as a public key's "cork": the verifier asks it for its size.
sub new {
    my ($class, $raw) = @_;
    # Loaded on first use (libcryptx-perl): most messages carry no Ed25519 signature.
    require Crypt::PK::Ed25519;
    my $pk = Crypt::PK::Ed25519->new;
    $pk->import_key_raw($raw, 'public');
    return bless {pk => $pk}, $class;
}
sub size   { 32 }
sub verify { my ($self, $message, $signature) = @_; $self->{pk}->verify_message($signature, $message) }

package Ed25519SHA256::Algorithm;

# SHA-256 digests and header handling as for rsa-sha256; only the signature check differs:
# RFC 8463 §3 signs the SHA-256 hash of the canonicalised headers with PureEdDSA.
use base 'Mail::DKIM::Algorithm::rsa_sha256';
use MIME::Base64;

sub verify {
    my $self      = shift;
    my $signature = decode_base64($self->signature->data);
    my $key       = $self->signature->get_public_key->cork;
    return unless $key->verify($self->{header_digest}->digest, $signature);
    return $self->check_body_hash;
}

package Ed25519SHA256;

use MIME::Base64;

sub install {
    require Mail::DKIM::Algorithm::rsa_sha256;
    no strict 'refs';
    no warnings 'redefine';

    my $algorithm_class = \&Mail::DKIM::Signature::get_algorithm_class;
    *{'Mail::DKIM::Signature::get_algorithm_class'} = sub {
        my ($self, $algorithm) = @_;
        return 'Ed25519SHA256::Algorithm' if lc($algorithm // '') eq 'ed25519-sha256';
        return $algorithm_class->(@_);
    };
    my $hash_algorithm = \&Mail::DKIM::Signature::hash_algorithm;
    *{'Mail::DKIM::Signature::hash_algorithm'} = sub {
        my ($self) = @_;
        return 'sha256' if lc($self->algorithm // '') eq 'ed25519-sha256';
        return $hash_algorithm->(@_);
    };
    # A key record with k=ed25519: p= is the raw 32-byte public key (RFC 8463 §4).
    my $check = \&Mail::DKIM::PublicKey::check;
    *{'Mail::DKIM::PublicKey::check'} = sub {
        my ($self) = @_;
        return $check->(@_) unless lc($self->get_tag('k') // '') eq 'ed25519';
        my $v = $self->get_tag('v');
        die "unsupported version\n" if defined $v && $v ne 'DKIM1';
        my $p = $self->data;
        die "missing p= tag\n" unless defined $p;
        die "revoked\n" if $p eq '';
        die "invalid data\n" unless $p =~ /^[A-Za-z0-9+\/=]+$/;
        my $raw = decode_base64($p);
        die "invalid data: an Ed25519 key has 32 bytes, not " . length($raw) . "\n"
          unless length($raw) == 32;
        $self->cork(Ed25519SHA256::Key->new($raw));
        if (my $s = $self->get_tag('s')) {
            die "does not support email\n" unless grep { $_ eq '*' || $_ eq 'email' } split /:/, $s;
        }
        return 1;
    };
}
