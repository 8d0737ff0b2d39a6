"""The word -> volume operator H against nilearn, and its properties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from nilearn.glm.first_level import compute_regressor, glover_hrf, spm_hrf

from napari_brainorg.errors import ConfigError, FilledTimesWarning, ShapeError
from napari_brainorg.features.alignment import (
    ALIGNMENT_METHODS,
    hrf_kernel,
    hrf_operator,
    volume_of_words,
    words_per_volume,
)
from napari_brainorg.io.stimuli import WordEvents, read_story

TR = 1.5
N_VOLUMES = 300


@pytest.fixture(scope="module")
def pieman():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FilledTimesWarning)
        return read_story("pieman")


def _nilearn(onsets, durations, amplitudes, hrf_model, frame_times, oversampling):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # onsets before its grid
        regressor, _ = compute_regressor(
            np.vstack([onsets, durations, amplitudes]), hrf_model, frame_times, oversampling=oversampling
        )
    return regressor[:, 0]


def _relative_error(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize(("method", "reference"), [("glover", glover_hrf), ("spm", spm_hrf)])
def test_hrf_kernels_equal_nilearns(method, reference):
    for tr, oversampling in [(1.5, 50), (2.0, 16), (0.72, 1), (1.0, 7)]:
        ours = hrf_kernel(method, tr, oversampling)
        theirs = reference(tr, oversampling)
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("method", ["glover", "spm"])
@pytest.mark.parametrize("oversampling", [50, 7, 1])
def test_single_word_matches_nilearn_compute_regressor(pieman, method, oversampling):
    H = hrf_operator(pieman, N_VOLUMES, TR, method=method, oversampling=oversampling)
    frame_times = np.arange(N_VOLUMES) * TR
    for w in (0, 1, 300, len(pieman) - 1):
        expected = _nilearn([pieman.onsets[w]], [0.0], [1.0], method, frame_times, oversampling)
        assert _relative_error(H[:, w], expected) < 1e-6


@pytest.mark.parametrize("method", ["glover", "spm"])
def test_weighted_words_with_durations_match_nilearn(pieman, method, rng):
    amplitudes = rng.standard_normal(len(pieman))
    durations = pieman.offsets - pieman.onsets
    frame_times = np.arange(N_VOLUMES) * TR
    impulses = hrf_operator(pieman.onsets, N_VOLUMES, TR, method=method)
    expected = _nilearn(pieman.onsets, np.zeros(len(pieman)), amplitudes, method, frame_times, 50)
    assert _relative_error(impulses @ amplitudes, expected) < 1e-6
    boxcars = hrf_operator(pieman.onsets, N_VOLUMES, TR, method=method, durations=durations)
    expected = _nilearn(pieman.onsets, durations, amplitudes, method, frame_times, 50)
    assert _relative_error(boxcars @ amplitudes, expected) < 1e-6


def test_matches_nilearn_for_other_trs_offsets_and_random_times(rng):
    for tr, n_volumes, offset, oversampling in [(2.0, 40, 0.0, 16), (0.72, 90, 0.36, 10), (2.5, 12, 1.0, 3)]:
        onsets = np.round(rng.uniform(-20, n_volumes * tr + 10, 40), 2)
        durations = np.round(rng.uniform(0, 3, 40), 2)
        amplitudes = rng.standard_normal(40)
        H = hrf_operator(
            onsets, n_volumes, tr, durations=durations, oversampling=oversampling, frame_offset=offset
        )
        frame_times = np.arange(n_volumes) * tr + offset
        expected = _nilearn(onsets, durations, amplitudes, "glover", frame_times, oversampling)
        assert _relative_error(H @ amplitudes, expected) < 1e-6


def test_operator_is_linear_in_the_word_activations(pieman, rng):
    H = hrf_operator(pieman, N_VOLUMES, TR)
    a, b = rng.standard_normal((2, len(pieman), 3))
    np.testing.assert_allclose(H @ (2.0 * a - 3.0 * b), 2.0 * (H @ a) - 3.0 * (H @ b), atol=1e-12)
    # one word at a time, summed, equals all words at once (streaming windows of words)
    halves = hrf_operator(pieman.onsets[:400], N_VOLUMES, TR) @ a[:400] + hrf_operator(
        pieman.onsets[400:], N_VOLUMES, TR
    ) @ a[400:]
    np.testing.assert_allclose(halves, H @ a, atol=1e-12)


@pytest.mark.parametrize("method", ["glover", "spm", "fir"])
def test_a_word_does_not_reach_volumes_before_it(method):
    onsets = np.array([30.0, 100.2, 460.0])  # the last word comes after the scan
    H = hrf_operator(onsets, 200, TR, method=method)
    times = np.arange(200) * TR
    for w, onset in enumerate(onsets):
        assert np.all(H[times < onset, w] == 0.0)
    assert np.all(H[:, 2] == 0.0)
    assert H[:, 0].max() > 0 and H[:, 1].max() > 0


def test_glover_peaks_about_five_seconds_after_a_word():
    H = hrf_operator([30.0], 100, 0.5, oversampling=20)
    peak = np.arange(100)[np.argmax(H[:, 0])] * 0.5
    assert 4.0 < peak - 30.0 < 6.0
    # a long boxcar reaches nilearn's unit plateau
    box = hrf_operator([10.0], 100, 0.5, durations=[35.0])
    assert abs(box[90, 0] - 1.0) < 1e-3


def test_lanczos_of_a_constant_signal_is_constant_in_the_interior():
    words_per_tr = 4
    onsets = np.arange(0, N_VOLUMES * TR, TR / words_per_tr) + 0.137
    H = hrf_operator(onsets, N_VOLUMES, TR, method="lanczos")
    response = H @ np.ones(onsets.size)
    interior = response[5:-5]
    assert np.ptp(interior) < 1e-6 * interior.mean()
    assert abs(interior.mean() - words_per_tr) < 0.05 * words_per_tr
    # a sinusoid slower than the volumes' Nyquist rate passes; zeros at whole TRs away
    slow = np.sin(2 * np.pi * onsets / 20.0)
    times = np.arange(N_VOLUMES) * TR
    np.testing.assert_allclose(
        (H @ slow)[10:-10] / words_per_tr, np.sin(2 * np.pi * times / 20.0)[10:-10], atol=0.02
    )
    one = hrf_operator([15.0], 30, TR, method="lanczos", lanczos_window=2)
    assert one[10, 0] == pytest.approx(1.0) and np.allclose(np.delete(one[:, 0], 10), 0.0, atol=1e-12)
    assert np.count_nonzero(hrf_operator([15.2], 30, TR, method="lanczos", lanczos_window=2)) == 4


def test_fir_is_the_mean_of_words_heard_fir_delays_before():
    onsets = np.array([0.1, 0.2, 1.6, 5.0])
    H = hrf_operator(onsets, 6, 1.5, method="fir", fir_delays=(0, 1))
    expected = np.array(
        [
            [0.25, 0.25, 0.0, 0.0],
            [0.25, 0.25, 0.5, 0.0],
            [0.0, 0.0, 0.5, 0.0],
            [0.0, 0.0, 0.0, 0.5],
            [0.0, 0.0, 0.0, 0.5],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_allclose(H, expected)
    H = hrf_operator(onsets, 6, 1.5, method="fir")  # delays 2, 3, 4
    assert np.all(H[:2] == 0) and H[2, 0] == pytest.approx(0.5 / 3)


def test_every_method_gives_the_same_shape(pieman):
    for method in ALIGNMENT_METHODS:
        H = hrf_operator(pieman, N_VOLUMES, TR, method=method)
        assert H.shape == (N_VOLUMES, len(pieman)) and H.dtype == np.float64
        assert np.isfinite(H).all()
    assert hrf_operator([], 10, TR).shape == (10, 0)


def test_volume_of_words_and_words_per_volume():
    events = WordEvents(
        words=("early", "a", "b", "c", "late"),
        onsets=[-1.0, 0.0, 1.4, 3.1, 99.0],
        offsets=[-0.5, 0.3, 1.6, 3.5, 99.5],
        measured=[True] * 5,
    )
    np.testing.assert_array_equal(volume_of_words(events, 4, 1.5), [-1, 0, 0, 2, -1])
    assert words_per_volume(events, 4, 1.5) == ["a b", "", "c", ""]
    np.testing.assert_array_equal(volume_of_words(events.onsets, 4, 1.5, frame_offset=0.5), [-1, -1, 0, 1, -1])


def test_pieman_words_per_volume_partition_the_transcript(pieman):
    text = words_per_volume(pieman, N_VOLUMES, TR)
    assert len(text) == N_VOLUMES
    assert " ".join(t for t in text if t) == " ".join(pieman.words)
    assert all(t == "" for t in text[:10])  # the story starts at 15.09 s, in volume 10
    # volume 10 spans [15.0, 16.5) s: "I" 15.09 ... "career" 16.33; the next word starts at 17.08
    assert text[10] == "I began my illustrious career"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tr": 0.0}, ConfigError, r"'tr' must be a positive number of seconds; 0\.0 was provided"),
        ({"tr": float("nan")}, ConfigError, "'tr' must be a positive"),
        ({"n_volumes": 0}, ConfigError, "'n_volumes' must be a positive integer; 0 was provided"),
        ({"n_volumes": 2.5}, ConfigError, "'n_volumes' must be a positive integer"),
        ({"method": "boxcar"}, ConfigError, r"'method' must be one of \['glover', 'spm', 'lanczos', 'fir'\]"),
        ({"onsets": [1.0, np.nan]}, ConfigError, r"'onsets' must be finite; 1 value\(s\) are not \(first: index 1"),
        ({"onsets": [[1.0, 2.0]]}, ShapeError, r"shape \(n_words,\); got shape \(1, 2\)"),
        ({"durations": [1.0]}, ShapeError, r"'durations' must have shape \(2,\)"),
        ({"durations": [1.0, -1.0]}, ConfigError, "'durations' must be >= 0"),
        ({"durations": [1.0, 1.0], "method": "fir"}, ConfigError, "'durations' apply to the methods 'glover' and 'spm' only"),
        ({"oversampling": 0}, ConfigError, "'oversampling' must be a positive integer"),
        ({"method": "lanczos", "lanczos_window": 0}, ConfigError, "'lanczos_window'"),
        ({"method": "fir", "fir_delays": ()}, ConfigError, "'fir_delays' must be a non-empty sequence"),
        ({"method": "fir", "fir_delays": (1, -2)}, ConfigError, "'fir_delays'"),
        ({"frame_offset": "middle"}, ConfigError, "'frame_offset' must be a finite number"),
    ],
)
def test_bad_inputs_get_clear_errors(kwargs, error, match):
    args = {"onsets": [1.0, 2.0], "n_volumes": 10, "tr": TR}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        hrf_operator(args.pop("onsets"), args.pop("n_volumes"), args.pop("tr"), **args)
