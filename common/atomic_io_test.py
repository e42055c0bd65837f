"""Tests of common/atomic_io.py: outputs appear whole or not at all."""

import os
import re

import pytest
import tensorflow as tf

from common import atomic_io


class Boom(Exception):
  """The failure the tests inject."""


def _tree(path):
  """{relative path: file text} of everything under `path`, dirs as None."""
  out = {}
  for root, dirs, files in os.walk(path):
    for name in dirs:
      out[os.path.relpath(os.path.join(root, name), path)] = None
    for name in files:
      full = os.path.join(root, name)
      with open(full) as f:
        out[os.path.relpath(full, path)] = f.read()
  return out


def _write(path, text):
  with open(path, 'w') as f:
    f.write(text)


def test_atomic_path_writes_through_a_hidden_temporary_beside_the_target(
    tmp_path):
  target = str(tmp_path / 'out.txt')
  with atomic_io.atomic_path(target) as temporary:
    assert os.path.dirname(temporary) == str(tmp_path)
    assert re.fullmatch(rf'\.out\.txt\.tmp-{os.getpid()}-[0-9a-f]{{8}}',
                        os.path.basename(temporary))
    _write(temporary, 'complete')
    assert os.listdir(tmp_path) == [os.path.basename(temporary)]
  assert _tree(tmp_path) == {'out.txt': 'complete'}
  with atomic_io.atomic_path(target) as again:
    assert again != temporary
    _write(again, 'replaced')
  assert _tree(tmp_path) == {'out.txt': 'replaced'}


def test_atomic_path_failure_leaves_nothing_and_keeps_the_old_file(tmp_path):
  target = str(tmp_path / 'out.txt')
  with pytest.raises(Boom):
    with atomic_io.atomic_path(target) as temporary:
      _write(temporary, 'half')
      raise Boom()
  assert not os.listdir(tmp_path)
  _write(target, 'old')
  with pytest.raises(Boom):
    with atomic_io.atomic_path(target) as temporary:
      _write(temporary, 'half')
      raise Boom()
  assert _tree(tmp_path) == {'out.txt': 'old'}


def test_atomic_path_requires_the_block_to_write(tmp_path):
  _write(tmp_path / 'out.txt', 'old')
  with pytest.raises(FileNotFoundError, match=r'Nothing was written to .*'
                     r'\.out\.txt\.tmp-.*, the temporary of .*out\.txt'):
    with atomic_io.atomic_path(str(tmp_path / 'out.txt')):
      pass
  assert _tree(tmp_path) == {'out.txt': 'old'}
  for path in ('', '/', str(tmp_path) + '/.'):
    with pytest.raises(ValueError, match='does not name a file or directory'):
      with atomic_io.atomic_path(path):
        pass


def test_write_json_passes_the_dump_arguments(tmp_path):
  target = str(tmp_path / 'counts.json')
  atomic_io.write_json(target, {'b': [1, 2], 'a': 'é'}, indent=1,
                       sort_keys=True, ensure_ascii=False)
  with open(target, encoding='utf-8') as f:
    assert f.read() == '{\n "a": "é",\n "b": [\n  1,\n  2\n ]\n}'
  assert os.listdir(tmp_path) == ['counts.json']


def test_write_json_that_fails_midway_keeps_the_old_file(tmp_path):
  target = str(tmp_path / 'counts.json')
  # json.dump writes "{"a": 1, "b": " before it meets the object.
  with pytest.raises(TypeError, match='not JSON serializable'):
    atomic_io.write_json(target, {'a': 1, 'b': object()})
  assert not os.listdir(tmp_path)
  atomic_io.write_json(target, {'a': 1})
  with pytest.raises(TypeError, match='not JSON serializable'):
    atomic_io.write_json(target, {'a': 2, 'b': object()})
  assert _tree(tmp_path) == {'counts.json': '{"a": 1}'}


def test_write_json_through_tf_io_gfile():
  target = 'ram://atomic_io_test/counts.json'
  tf.io.gfile.makedirs('ram://atomic_io_test')
  atomic_io.write_json(target, [1, 2])
  with pytest.raises(TypeError):
    atomic_io.write_json(target, [3, object()])
  with tf.io.gfile.GFile(target) as f:
    assert f.read() == '[1, 2]'
  assert tf.io.gfile.listdir('ram://atomic_io_test') == ['counts.json']


def test_atomic_directory_appears_whole(tmp_path):
  target = str(tmp_path / 'parent' / 'export')
  with atomic_io.atomic_directory(target) as temporary:
    assert re.fullmatch(rf'\.export\.tmp-{os.getpid()}-[0-9a-f]{{8}}',
                        os.path.basename(temporary))
    assert os.listdir(temporary) == []
    os.mkdir(os.path.join(temporary, 'sub'))
    _write(os.path.join(temporary, 'sub', 'a'), 'A')
    assert not os.path.exists(target)
  assert _tree(tmp_path / 'parent') == {'export': None, 'export/sub': None,
                                        'export/sub/a': 'A'}


def test_atomic_directory_replaces_an_existing_one_once_complete(tmp_path):
  target = str(tmp_path / 'export')
  os.mkdir(target)
  _write(os.path.join(target, 'stale'), 'old')
  with atomic_io.atomic_directory(target) as temporary:
    _write(os.path.join(temporary, 'fresh'), 'new')
    assert _tree(target) == {'stale': 'old'}
  assert _tree(tmp_path) == {'export': None, 'export/fresh': 'new'}


def test_atomic_directory_failure_keeps_the_old_one(tmp_path):
  target = str(tmp_path / 'export')
  with pytest.raises(Boom):
    with atomic_io.atomic_directory(target) as temporary:
      _write(os.path.join(temporary, 'half'), 'x')
      raise Boom()
  assert not os.listdir(tmp_path)
  os.mkdir(target)
  _write(os.path.join(target, 'a'), 'old')
  with pytest.raises(Boom):
    with atomic_io.atomic_directory(target) as temporary:
      _write(os.path.join(temporary, 'a'), 'half')
      raise Boom()
  assert _tree(tmp_path) == {'export': None, 'export/a': 'old'}


def test_atomic_directory_restores_the_old_one_if_the_new_cannot_move(
    tmp_path, monkeypatch):
  target = str(tmp_path / 'export')
  os.mkdir(target)
  _write(os.path.join(target, 'a'), 'old')
  replace = os.replace
  calls = []

  def second_fails(source, destination):
    calls.append((os.path.basename(source), os.path.basename(destination)))
    if len(calls) == 2:
      raise OSError('no space left')
    replace(source, destination)

  monkeypatch.setattr(os, 'replace', second_fails)
  with pytest.raises(OSError, match='no space left'):
    with atomic_io.atomic_directory(target) as temporary:
      _write(os.path.join(temporary, 'a'), 'new')
  # Old aside, new in (fails), old back.
  assert [re.sub(r'-\d+-[0-9a-f]{8}$', '', name) for call in calls
          for name in call] == ['export', '.export.old', '.export.tmp',
                                'export', '.export.old', 'export']
  assert _tree(tmp_path) == {'export': None, 'export/a': 'old'}


def test_atomic_files_of_a_new_directory_appear_whole(tmp_path):
  target = str(tmp_path / 'converted')
  with atomic_io.atomic_files(target, last=['checkpoint']) as staging:
    assert os.path.basename(staging).startswith('.converted.tmp-')
    _write(os.path.join(staging, 'ckpt.index'), 'i')
    _write(os.path.join(staging, 'checkpoint'), 'c')
  assert _tree(target) == {'ckpt.index': 'i', 'checkpoint': 'c'}
  assert os.listdir(tmp_path) == ['converted']


def test_atomic_files_join_other_files_and_move_last_ones_last(
    tmp_path, monkeypatch):
  target = tmp_path / 'converted'
  target.mkdir()
  _write(target / 'source.pth', 'keep')
  _write(target / 'params.yaml', 'old params')
  _write(target / 'checkpoint', 'old state')
  (target / 'saved').mkdir()
  _write(target / 'saved' / 'stale', 'old')
  events = []
  replace, remove = os.replace, os.remove
  monkeypatch.setattr(os, 'replace', lambda s, d: (
      events.append(('move', os.path.basename(d))), replace(s, d)))
  monkeypatch.setattr(os, 'remove', lambda p: (
      events.append(('remove', os.path.basename(p))), remove(p)))
  with atomic_io.atomic_files(str(target),
                              last=['params.yaml', 'checkpoint']) as staging:
    assert os.path.dirname(staging) == str(target)
    assert os.path.basename(staging).startswith('.staging.tmp-')
    for name, text in (('checkpoint', 'new state'), ('b.data', 'b'),
                       ('a.data', 'a'), ('params.yaml', 'new params')):
      _write(os.path.join(staging, name), text)
    os.mkdir(os.path.join(staging, 'saved'))
    _write(os.path.join(staging, 'saved', 'fresh'), 'new')
  assert _tree(target) == {
      'source.pth': 'keep', 'params.yaml': 'new params', 'a.data': 'a',
      'b.data': 'b', 'checkpoint': 'new state', 'saved': None,
      'saved/fresh': 'new'}
  moves = [(kind, re.sub(r'-\d+-[0-9a-f]{8}$', '', name))
           for kind, name in events]
  assert moves == [
      ('remove', 'checkpoint'), ('remove', 'params.yaml'),
      ('move', 'a.data'), ('move', 'b.data'),
      ('move', '.saved.old'), ('move', 'saved'),  # The old dir aside, new in.
      ('move', 'params.yaml'), ('move', 'checkpoint')]


def test_atomic_files_failure_keeps_the_directory_as_it_was(tmp_path):
  target = tmp_path / 'converted'
  with pytest.raises(Boom):
    with atomic_io.atomic_files(str(target)) as staging:
      _write(os.path.join(staging, 'a.data'), 'half')
      raise Boom()
  assert not os.listdir(tmp_path)
  target.mkdir()
  _write(target / 'a.data', 'old')
  _write(target / 'checkpoint', 'old state')
  with pytest.raises(Boom):
    with atomic_io.atomic_files(str(target), last=['checkpoint']) as staging:
      _write(os.path.join(staging, 'a.data'), 'half')
      raise Boom()
  with pytest.raises(FileNotFoundError, match=r'checkpoint not written'):
    with atomic_io.atomic_files(str(target), last=['checkpoint']) as staging:
      _write(os.path.join(staging, 'a.data'), 'new')
  assert _tree(tmp_path) == {'converted': None, 'converted/a.data': 'old',
                             'converted/checkpoint': 'old state'}
  _write(tmp_path / 'file', '')
  with pytest.raises(NotADirectoryError, match='is not a directory'):
    with atomic_io.atomic_files(str(tmp_path / 'file')):
      pass


def test_atomic_files_written_into_a_new_directory_are_checked(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'index, checkpoint not '
                     r'written'):
    with atomic_io.atomic_files(str(tmp_path / 'new'),
                                last=['index', 'checkpoint']) as staging:
      _write(os.path.join(staging, 'data'), 'd')
  assert not os.listdir(tmp_path)

