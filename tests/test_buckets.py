"""Resolution buckets: the strings users type, the errors they get, and where each clip lands."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ltxtrainer.buckets import (
    Bucket,
    BucketError,
    assign_bucket,
    format_buckets,
    parse_buckets,
    shrink_frames,
)


def test_parse_and_format_round_trip():
    buckets = parse_buckets(" 768x512x49 ; 512X768×49;768x512x49;")
    assert buckets == [Bucket(768, 512, 49), Bucket(512, 768, 49)]
    assert format_buckets(buckets) == "768x512x49;512x768x49"
    assert parse_buckets([(768, 512, 49), "32x32x1"]) == [Bucket(768, 512, 49), Bucket(32, 32, 1)]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("768x500x49", ["768x500x49", "multiples of 32"]),
        ("768x512x48", ["768x512x48", "8k+1", "41"]),
        ("768x512", ["768x512", "WIDTHxHEIGHTxFRAMES"]),
        ("0x512x49", ["0x512x49", "multiples of 32"]),
        ("768x512x49;abc", ["'abc'"]),
        (" ; ", ["no resolution bucket"]),
    ],
)
def test_bad_entries_name_the_entry_and_the_rule(text, names):
    with pytest.raises(BucketError) as caught:
        parse_buckets(text)
    for name in names:
        assert name in str(caught.value)


@given(
    st.integers(1, 64).map(lambda n: n * 32),
    st.integers(1, 64).map(lambda n: n * 32),
    st.integers(0, 40).map(lambda k: 8 * k + 1),
)
def test_every_valid_bucket_parses_and_formats_back(width, height, num_frames):
    text = f"{width}x{height}x{num_frames}"
    assert format_buckets(parse_buckets(text)) == text


@given(st.integers(1, 2048), st.integers(1, 2048), st.integers(1, 400))
def test_invalid_sizes_are_refused(width, height, num_frames):
    valid = width % 32 == 0 and height % 32 == 0 and num_frames % 8 == 1
    text = f"{width}x{height}x{num_frames}"
    if valid:
        assert parse_buckets(text) == [Bucket(width, height, num_frames)]
    else:
        with pytest.raises(BucketError, match=text):
            parse_buckets(text)


BUCKETS = parse_buckets("768x512x49;512x768x49;512x512x25;512x512x49;256x256x49")


def test_landscape_portrait_and_square_clips_find_their_shape():
    assert assign_bucket(1920, 1080, 200, BUCKETS) == Bucket(768, 512, 49)
    assert assign_bucket(1080, 1920, 200, BUCKETS) == Bucket(512, 768, 49)
    assert assign_bucket(1000, 1000, 200, BUCKETS) == Bucket(512, 512, 49)


def test_length_decides_among_buckets_of_the_same_shape():
    assert assign_bucket(1000, 1000, 30, BUCKETS) == Bucket(512, 512, 25)
    # Too short for every square bucket: the shortest one, for the caller to skip or shrink.
    assert assign_bucket(1000, 1000, 10, BUCKETS) == Bucket(512, 512, 25)
    assert shrink_frames(10) == 9 and shrink_frames(25) == 25 and shrink_frames(1) == 1


def test_size_decides_last_without_upscaling_when_possible():
    assert assign_bucket(300, 300, 60, BUCKETS) == Bucket(256, 256, 49)
    assert assign_bucket(100, 100, 60, BUCKETS) == Bucket(256, 256, 49)


def test_images_train_as_one_frame():
    assert assign_bucket(1920, 1080, 1, BUCKETS) == Bucket(768, 512, 1)
    with_image_bucket = [*BUCKETS, Bucket(1024, 1024, 1)]
    assert assign_bucket(1920, 1080, 1, with_image_bucket) == Bucket(1024, 1024, 1)


@given(st.integers(16, 4000), st.integers(16, 4000), st.integers(2, 300))
def test_assignment_picks_the_closest_aspect_ratio(width, height, num_frames):
    chosen = assign_bucket(width, height, num_frames, BUCKETS)
    distance = abs(math.log(width / height) - math.log(chosen.aspect))
    assert all(distance <= abs(math.log(width / height) - math.log(b.aspect)) + 1e-9 for b in BUCKETS)
    assert chosen in BUCKETS
