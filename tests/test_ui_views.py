"""What the GUI offers and shows, checked without a browser: frame counts, new projects, log, plot."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ltxtrainer.pipeline import PipelineError
from ltxtrainer.synthetic import make_clip
from ltxtrainer.ui import monitor
from ltxtrainer.ui.runs import loss_points
from ltxtrainer.ui.tab_pipeline import default_frames, frame_choices
from ltxtrainer.ui.workspace import AppPaths, create_project


@pytest.fixture
def paths(tmp_path) -> AppPaths:
    (tmp_path / "train_date").mkdir()
    return AppPaths(train_date=tmp_path / "train_date", datasets=tmp_path / "datasets", outputs=tmp_path / "outputs")


def test_every_8k_plus_1_frame_count_is_offered_and_the_default_is_the_largest_every_clip_reaches(paths, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    make_clip(uploads / "a.mp4", width=64, height=64, frames_per_scene=(48,))
    make_clip(uploads / "b.mp4", width=64, height=64, frames_per_scene=(30, 30))
    create_project(paths, "MYCAT", sorted(uploads.iterdir()))
    choices, fitting = frame_choices(SimpleNamespace(paths=paths), "MYCAT", "en")
    assert [value for _, value in choices][:4] == [9, 17, 25, 33] and len(choices) == 45
    assert fitting == [9, 17, 25, 33, 41]
    assert ("41 ✓", 41) in choices and ("49 (1/2 clips long enough)", 49) in choices
    assert default_frames(fitting) == 41  # the 24k+1 list offered 25 or 49, which skipped the 48-frame clip
    assert default_frames(fitting, 17) == 17 and default_frames(fitting, "9") == 9  # a typed count stays
    assert default_frames(fitting, 49) == 41  # a remembered count the clips do not reach
    assert default_frames([9, 17, 25, 33, 41, 49, 57, 65], None) == 49  # long clips: capped at the templates' 49


def test_a_new_project_gets_a_checked_name_and_copies_of_videos_and_images(paths, tmp_path):
    uploads = tmp_path / "上传 folder"
    uploads.mkdir()
    make_clip(uploads / "猫 one.mp4", width=64, height=64, frames_per_scene=(9,))
    (uploads / "still.PNG").write_bytes(b"\x89PNG\r\n")
    (uploads / "notes.txt").write_text("not media", encoding="utf-8")
    media = [uploads / "猫 one.mp4", uploads / "still.PNG"]
    with pytest.raises(PipelineError, match="Trigger word '我的猫' is refused"):
        create_project(paths, "我的猫", media)
    with pytest.raises(PipelineError, match=r"Not a video or image: notes\.txt\. Allowed: .*\.mp4"):
        create_project(paths, "MYCAT", [*media, uploads / "notes.txt"])
    with pytest.raises(PipelineError, match="No files"):
        create_project(paths, "MYCAT", [])
    assert not (paths.train_date / "MYCAT").exists()  # nothing copied before every check passed
    folder = create_project(paths, " MYCAT ", media)
    assert folder == paths.train_date / "MYCAT"
    assert sorted(p.name for p in folder.iterdir()) == ["still.PNG", "猫 one.mp4"]
    with pytest.raises(PipelineError, match="already exists"):
        create_project(paths, "MYCAT", media)


def test_loss_values_are_numbers_with_a_smoothed_line_whatever_the_log_held():
    events = [{"event": "step", "step": 1, "loss": "2.5"}, {"event": "step", "step": 2, "loss": 1.5},
              {"event": "step", "step": 3, "loss": float("nan")}, {"event": "step", "step": 2, "loss": 1.0},
              {"event": "validation", "step": 2}]
    points = loss_points(events)
    assert points == [(1, 2.5), (2, 1.0)]  # strings read as numbers, NaN dropped, a resumed step's latest value
    frame = monitor.loss_frame(points)
    assert frame["value"].dtype.kind == "f" and frame["step"].dtype.kind == "i"
    assert list(frame["series"]) == ["loss", "loss", "smoothed", "smoothed"]
    assert frame["value"].iloc[2] == 2.5  # the smoothed line starts at the first loss (debiased)
    empty = monitor.loss_frame([])  # an empty object-typed frame made the plot's y axis categorical
    assert empty["value"].dtype.kind == "f" and empty["step"].dtype.kind == "i"


def test_the_log_shows_human_lines_newest_at_the_bottom_without_json_events():
    text = ('$ run_pipeline.py APT\n{"event": "pipeline_start", "stages": ["train"]}\n'
            '[train] step 1 loss 2.0\ntrain  50%|###  {"event": "step", "step": 1}\nPipeline finished <ok>\n')
    lines = monitor.human_lines(text).splitlines()
    assert lines == ["$ run_pipeline.py APT", "[train] step 1 loss 2.0", "train  50%|###", "Pipeline finished <ok>"]
    html = monitor.log_html("\n".join(lines), "(empty)")
    assert "column-reverse" in html and "&lt;ok&gt;" in html  # follows the end; escaped


def test_the_stage_table_says_the_pipelines_own_messages_in_the_users_language():
    """The pipeline names its fixed stage messages by a code; a stage script's own last line stays as written."""
    events = [
        {"event": "pipeline_start", "stages": ["split", "train"]},
        {"event": "pipeline", "stage": "split", "status": "skipped", "message": "already done at 2026-12-01 10:00",
         "code": "already_done", "values": {"at": "2026-12-01 10:00"}},
        {"event": "pipeline", "stage": "train", "status": "done", "message": "Training finished at step 2."},
    ]
    zh = monitor.progress_html(monitor.stage_progress(events), "zh")
    assert "已于 2026-12-01 10:00 完成" in zh and "already done" not in zh
    assert "Training finished at step 2." in zh
    assert "already done at 2026-12-01 10:00" in monitor.progress_html(monitor.stage_progress(events), "en")
